"""A multi-host network: Linux network namespaces as hosts, one PostgreSQL server reachable over links.

The partition tests (tests/test_partitions.py, through tests/netns.py) cut and heal the links; the
``scaling`` benchmark (benchmarks/scaling.py) runs its app processes in the hosts, against a durable server.

Topology: a bridge in the root namespace carries the database host's address (``.1``, where a throwaway
PostgreSQL cluster listens) and one veth link per app host (a namespace with ``eth0`` at ``.10 + i``). A
partition cuts a host's link (the bridge side goes down: packets are dropped, nothing is reset, as with a
pulled cable or a dead switch port); a heal brings it back. The test process itself stays on the database
host, so its own checks always reach the server.

Everything has names unique to this run (``ep<pid>...``) and is removed by :meth:`Network.close` (a
fixture finalizer or the benchmark's ``finally``), even when a test fails; a run killed outright leaves names a later run removes
(:func:`sweep`). Needs root (CAP_NET_ADMIN) and iproute2: :func:`unavailable` says why not, in one line.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PREFIX = "ep"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def required() -> bool:
    """Whether a missing namespace facility fails the tests (CI, or EPOCH_REQUIRE_NETNS=1) instead of skipping."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("EPOCH_REQUIRE_NETNS") == "1"


def unavailable() -> str | None:
    """Why network namespaces cannot be used here (one line), or None when they can."""
    if shutil.which("ip") is None:
        return "app hosts in network namespaces need iproute2's `ip` (apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "app hosts in network namespaces need root (namespaces and links need CAP_NET_ADMIN)"
    probe = f"{_PREFIX}probe{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip() or done.returncode}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> None:
    """Remove namespaces and links left by runs that were killed before their finalizers ran."""
    names = _ip("netns", "list", check=False).stdout.split()
    links = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").stdout.splitlines()]
    for name in [*names, *links]:
        if name.startswith(_PREFIX) and name[len(_PREFIX) :].split("x")[0].isdigit():
            pid = int(name[len(_PREFIX) :].split("x")[0])
            if not _alive(pid):
                _ip("netns", "del", name, check=False) if name in names else _ip("link", "del", name, check=False)


def _free_subnet() -> str:
    used = _ip("-o", "-4", "addr").stdout
    for _ in range(200):
        subnet = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Network:
    """The database host (this process) and ``hosts`` app hosts; :meth:`close` removes everything.

    The server runs without fsync (tests) unless ``durable``: then with PostgreSQL's defaults, fsync,
    synchronous_commit and full_page_writes on (benchmarks)."""

    def __init__(self, hosts: int, *, durable: bool = False) -> None:
        self.durable = durable
        self.tag = f"{_PREFIX}{os.getpid()}x{random.randint(0, 999)}"
        self.subnet = _free_subnet()
        self.server = f"{self.subnet}.1"
        self.bridge = f"{self.tag}b"
        self.hosts = [f"{self.tag}h{i}" for i in range(hosts)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self._pg: tuple[Path, Path, list[str]] | None = None
        self.dsn = ""
        try:
            self._build()
            self._start_postgres()
        except BaseException:
            self.close()
            raise

    def link(self, host: int) -> str:
        """The bridge side of an app host's link (what :meth:`cut` takes down)."""
        return f"{self.hosts[host]}v"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{10 + host}"

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("addr", "add", f"{self.server}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.hosts):
            _ip("netns", "add", name)
            _ip("link", "add", self.link(i), "type", "veth", "peer", "name", f"{name}p")
            _ip("link", "set", f"{name}p", "netns", name)
            _ip("link", "set", self.link(i), "master", self.bridge, "up")
            _ip("-n", name, "link", "set", f"{name}p", "name", "eth0")
            _ip("-n", name, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def _start_postgres(self) -> None:
        pgbin = os.environ.get("EPOCH_TEST_PG_BIN") or sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1].as_posix()
        root = Path(tempfile.mkdtemp(prefix="epoch-netpg."))
        run = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if run:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        subprocess.run(
            [*run, f"{pgbin}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.subnet}.0/24 trust\n")
        port = _free_port(self.server)
        self._pg = (Path(pgbin), data, run)
        options = f"-k {root} -p {port} -c listen_addresses={self.server} -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off"
        log = str(root / "server.log")
        subprocess.run(
            [*run, f"{pgbin}/pg_ctl", "-D", str(data), "-l", log, "-w", "-t", "30", "-o", options, "start"],
            check=True,
            capture_output=True,
        )
        self.dsn = f"postgresql://postgres@{self.server}:{port}/postgres"

    def cut(self, host: int, replies: bool = False) -> None:
        """Partition an app host: its link goes down (packets dropped both ways, nothing reset). With
        ``replies``, only what the database host sends it is dropped (a blackhole route): its requests still
        arrive and commit, the answers never come back (the ambiguous commit)."""
        if replies:
            _ip("route", "add", "blackhole", f"{self.address(host)}/32")
        else:
            _ip("link", "set", self.link(host), "down")

    def heal(self, host: int) -> None:
        """Undo :meth:`cut` (either kind)."""
        _ip("route", "del", "blackhole", f"{self.address(host)}/32", check=False)
        _ip("link", "set", self.link(host), "up")

    def spawn(self, host: int, *argv: str) -> subprocess.Popen[bytes]:
        """Start ``python argv...`` inside an app host (stdout piped; killed by :meth:`close`)."""
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host], sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        if self._pg is not None:
            pgbin, data, run = self._pg
            subprocess.run(
                [*run, f"{pgbin}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True
            )
            shutil.rmtree(data.parent, ignore_errors=True)
            self._pg = None
        for i, name in enumerate(self.hosts):
            _ip("route", "del", "blackhole", f"{self.address(i)}/32", check=False)
            _ip("netns", "del", name, check=False)  # takes its end of the veth (and so the whole pair) with it
        for i in range(len(self.hosts)):
            _ip("link", "del", self.link(i), check=False)
        _ip("link", "del", self.bridge, check=False)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate()`` until true; the seconds it took. AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")
