"""Helpers for the fault-injection and soak tests (tests/test_faults.py, tests/test_soak.py).

- :class:`PgCluster`: a dedicated throwaway PostgreSQL cluster with fsync ON, so a ``pg_ctl stop -m
  immediate`` is a real crash of a durable server (the shared test cluster runs with fsync off).
- :class:`Workers`: OS processes (``python -m tests.fault_workers ...``) whose stdout lines are collected
  as they come, so a test knows what each one acknowledged before it was SIGKILLed.
- :func:`check_log`: the invariants of the global log every fault test checks (exactly once, positions
  strictly increasing, each stream dense and in version order).
- :func:`peak_rss_kib` / :func:`reset_peak_rss` and :func:`report`: the figures a soak prints and keeps
  under ``.soak/`` (``make soak``) or ``.soak/short/`` (``make test``) for the reliability report.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from epoch import RecordedEvent

ROOT = Path(__file__).resolve().parents[1]
# `make soak` keeps its figures in .soak/; the short versions (make test) in .soak/short/, so a later
# `make test` does not overwrite the long run's.
SOAK_DIR = ROOT / os.environ.get("EPOCH_SOAK_REPORT_DIR", ".soak/short")
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}


def env_int(name: str, default: int) -> int:
    """An int from the environment (the long versions under ``make soak`` set these)."""
    return int(os.environ.get(name) or default)


# -- the global log's invariants -------------------------------------------------------------------


def check_log(events: list[RecordedEvent], streams: dict[str, list[int]] | None = None) -> None:
    """Every event once, positions strictly increasing, each stream's versions dense and in order.

    ``streams``, when given, maps each stream to its versions as ``read_stream`` returned them: the
    global log must hold exactly those, in that order.
    """
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events delivered twice"
    positions = [e.position for e in events]
    inversions = [(a, b) for a, b in itertools.pairwise(positions) if a >= b]
    assert not inversions, f"positions not strictly increasing: {inversions[:5]}"
    per_stream: dict[str, list[int]] = {}
    for e in events:
        per_stream.setdefault(e.stream, []).append(e.version)
    for stream, versions in per_stream.items():
        assert versions == list(range(len(versions))), f"{stream}: versions in the log {versions[:50]}"
    if streams is not None:
        assert per_stream == {s: v for s, v in streams.items() if v}


# -- OS processes ----------------------------------------------------------------------------------


class Worker:
    """One ``python -m tests.fault_workers ARGS`` process; its stdout lines land in ``lines``."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []
        self.reader = asyncio.ensure_future(self._read())
        self.killed = False

    @classmethod
    async def start(cls, *args: str, name: str = "") -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fault_workers",
            *args,
            cwd=ROOT,
            env=ENV,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process, name or " ".join(args[:2]))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    async def wait_for_lines(self, count: int, timeout: float = 60) -> None:
        """Until the worker printed ``count`` lines; fails with its stderr when it dies first."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.process.returncode is not None or time.monotonic() > deadline:
                await self.reader
                err = (await self.process.stderr.read()).decode() if self.process.stderr else ""
                pytest.fail(f"worker {self.name} printed {len(self.lines)} of {count} lines: {err[-3000:]}")
            await asyncio.sleep(0.01)

    async def kill(self) -> None:
        """SIGKILL, then wait: whatever it printed before the signal is in ``lines``."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.killed = True
        await self.process.wait()
        await self.reader

    async def finish(self, timeout: float = 120) -> None:
        """Wait for a normal exit; fail with its stderr on any other outcome."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            pytest.fail(f"worker {self.name} did not finish within {timeout} s")
        await self.reader
        err = (await self.process.stderr.read()).decode() if self.process.stderr else ""
        assert self.process.returncode == 0, f"worker {self.name} exited {self.process.returncode}: {err[-3000:]}"

    async def stop(self) -> None:
        if self.process.returncode is None:
            await self.kill()


# -- a PostgreSQL cluster of the test's own, fsync on ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster with fsync, synchronous_commit and full_page_writes ON.

    ``stop("fast")`` disconnects clients and shuts down cleanly; ``stop("immediate")`` kills the server
    processes without a checkpoint (a crash: the next start replays the WAL).
    """

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            if os.environ.get("EPOCH_REQUIRE_POSTGRES") == "1" or os.environ.get("CI"):
                pytest.fail("no PostgreSQL binaries for a fsync-on cluster (apt-get install postgresql)")
            pytest.skip("no PostgreSQL binaries (apt-get install postgresql)")
        self.bin = bins[-1]
        self.root = tempfile.mkdtemp(prefix="epoch-pgf.")  # short: unix socket paths max ~107 bytes
        self.run: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            self.run = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.data = f"{self.root}/data"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on "
            "-c full_page_writes=on -c max_connections=100"
        )
        self._pg("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self.run, f"{self.bin}/{tool}", *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._pg(
            "pg_ctl", "-D", self.data, "-l", f"{self.root}/server.log", "-w", "-t", "60", "-o", self.options, "start"
        )

    def stop(self, mode: str) -> None:
        self._pg("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def setting(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
            assert row is not None
            return str(row[0])

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# -- figures ---------------------------------------------------------------------------------------


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM) since it started or since :func:`reset_peak_rss`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: ``5`` into clear_refs), so each phase gets its own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures (quotable from ``pytest -s``) and keep them in ``.soak/{name}.json``."""
    SOAK_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(figures, indent=2, sort_keys=True)
    (SOAK_DIR / f"{name}.json").write_text(text + "\n")
    print(f"\n[{name}] {text}")


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def counted(values: Iterable[object]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out
