"""The installed package is complete: a wheel built from this tree, in a fresh venv outside the checkout.

The wheel is built with ``uv build`` (bootstrapped by ``make``), installed with pip as a user would
(``pip install 'epoch_es-….whl[web]'``, from whatever index pip is configured with), and every command
runs with its working directory outside the checkout and an environment that cannot reach it (no
PYTHONPATH, no checkout venv on PATH, no EPOCH_* variables). Nothing is kept between runs: the wheel,
the venv and the stores live in this session's temporary directories.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving import free_port, serving

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".tools" / "bin" / "uv"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)  # as tests/test_docs.py reads README.md
APPS = [  # docs/web.md's showcase
    "epoch.examples.users.projections:runner",
    "epoch.examples.users.registry:name_claims_runner",
    "epoch.examples.users.service:UserService",
    "epoch.examples.users.registry:registry_handler",
]

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Install:
    venv: Path
    env: dict[str, str]

    @property
    def epoch(self) -> str:
        return str(self.venv / "bin" / "epoch")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)


def outside_checkout(path: Path) -> Path:
    assert not path.resolve().is_relative_to(ROOT), f"{path} is inside the checkout {ROOT}"
    return path


def clean_env(venv: Path) -> dict[str, str]:
    """The user's environment: pip's own settings and the basics, nothing that points into the checkout."""
    keep = {"HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run `make test` (it bootstraps uv into .tools/)")
    base = outside_checkout(tmp_path_factory.mktemp("wheel"))
    dist = base / "dist"
    built = subprocess.run(
        [str(UV), "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("epoch_es-*-py3-none-any.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    install = Install(venv, clean_env(venv))
    pip = install.run(install.python, "-m", "pip", "install", "-q", f"{wheel}[web]", cwd=base, timeout=240)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # The package is the installed one, never this tree's src/.
    where = install.run(install.python, "-c", "import epoch, epoch.examples.users as u; print(u.__file__)", cwd=base)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    return install


@dataclass(frozen=True)
class Demo:
    cwd: Path
    stream: str
    stdout: str


@pytest.fixture(scope="module")
def demo(installed: Install, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``epoch demo`` once, in an empty directory: its default store is ./epoch.db there."""
    cwd = outside_checkout(tmp_path_factory.mktemp("demo"))
    result = installed.run(installed.epoch, "demo", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    first = result.stdout.splitlines()[0]
    match = re.fullmatch(
        r"Users directory stream '(users-[0-9a-f]{8})' on the default store \(sqlite:///epoch.db\)", first
    )
    assert match, first
    return Demo(cwd, match.group(1), result.stdout)


def test_epoch_demo_runs_from_the_wheel(demo: Demo) -> None:
    lines = [line.strip() for line in demo.stdout.splitlines()]
    events = [re.sub(r"\s+", " ", line) for line in lines if line.startswith(("v0 ", "v1 ", "v2 "))]
    assert len(events) == 3, demo.stdout
    assert re.fullmatch(r'v0 pos 1 UserAdded \{"user_id":"[0-9a-f]{12}","name":"ada"\}', events[0]), events
    assert re.fullmatch(r'v1 pos 2 UserAdded \{"user_id":"[0-9a-f]{12}","name":"grace"\}', events[1]), events
    assert re.fullmatch(r'v2 pos 3 UserUpdated \{"user_id":"[0-9a-f]{12}","name":"ada lovelace"\}', events[2]), events
    assert "AddUser(grace) again is refused by decide: DuplicateName: a user named 'grace' already exists" in lines
    assert (demo.cwd / "epoch.db").is_file()


def test_the_readme_example_runs_from_the_wheel(installed: Install, tmp_path: Path) -> None:
    program = next(b for b in BLOCK.findall((ROOT / "README.md").read_text()) if "asyncio.run(" in b)
    assert "from epoch.examples.users import" in program
    script = outside_checkout(tmp_path) / "first.py"
    script.write_text(program)
    result = installed.run(installed.python, str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    printed = result.stdout.splitlines()
    assert len(printed) == 2, result.stdout
    assert re.fullmatch(r"users-main 0 UserAdded\(user_id='[0-9a-f]{12}', name='ada'\)", printed[0]), printed
    assert printed[1] == "0 ['ada']"


@pytest.fixture
def served(installed: Install, demo: Demo) -> Iterator[str]:
    """``epoch serve`` with the shipped example's apps over the demo's store, in the background."""
    port = free_port()
    command = [installed.epoch, "serve", "--port", str(port)]
    for spec in APPS:
        command += ["--app", spec]
    process = subprocess.Popen(
        command, cwd=demo.cwd, env=installed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with serving(process, port, _accepts(port)) as base:  # the page itself is fetched once, by the test
        yield base


def _accepts(port: int) -> Callable[[str], bool]:
    def ready(base: str) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    return ready


def test_epoch_serve_with_the_shipped_example_app(served: str, demo: Demo) -> None:
    with urllib.request.urlopen(f"{served}/deciders", timeout=10) as response:
        status, body = response.status, response.read().decode()
    assert status == 200
    assert "<code>Decider (epoch.examples.users.domain)</code>" in body
    assert f"{demo.stream} · version" in body


def test_a_cli_error_is_one_line_on_stderr(installed: Install, tmp_path: Path) -> None:
    result = installed.run(installed.epoch, "read", "", "--store", "memory://", cwd=outside_checkout(tmp_path))
    assert result.returncode != 0
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    # The message is pinned whole; the prefix is the CLI's convention for errors.
    assert line.endswith("invalid stream name '': must have 1 to 512 characters, not 0"), line


def test_epoch_bench_says_in_one_line_that_it_needs_a_checkout(installed: Install, tmp_path: Path) -> None:
    result = installed.run(installed.epoch, "bench", "--quick", cwd=outside_checkout(tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "epoch bench runs from a checkout of epoch's repository: there, run `make bench`\n"
