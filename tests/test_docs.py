"""Documentation code runs as written: every Python block of README.md and docs/**/*.md is executed.

A page that says, before its first block, "The Python blocks on this page form one program" runs its
blocks in order in one namespace, as one file would. On every other page each block runs alone: its own
namespace, its own empty working directory. A block that cannot run here (it needs a server the suite
does not have, or serves forever) says so to its reader in a comment line ending ": not run by the docs
test", and the list of those blocks is pinned below. The quickstart's program also passes ``mypy --strict``.

A ``console`` block is a shell session: each ``$ epoch ...`` command runs in the working directory of the
page's Python block before it, and prints what the block shows after it (timings and rates aside).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.S | re.M)
PROGRAM = "The Python blocks on this page form one program"
NOT_RUN = re.compile(r"^# .*: not run by the docs test$", re.M)
LANGUAGES = {"python", "sh", "bash", "console", "sql", "text", ""}  # anything else would slip past the test

NOT_RUN_BLOCKS = {
    "docs/stores/postgresql.md#0",  # a server at db.example.com
    "docs/stores/postgresql.md#1",  # a fragment of a PostgreSQL projection
    "docs/web.md#0",  # uvicorn.run serves until stopped
    "docs/forwarding.md#0",  # a nats-server with JetStream
    "docs/http.md#1",  # a FastAPI fragment of the program before it (tests/test_http_fastapi.py runs FastAPI)
}

# What each block prints, where a block prints; ids, times and paths vary and are matched as patterns.
PRINTED = {
    "docs/snapshots.md#1": [re.escape("Course(enrolled=250)"), re.escape("tag:course:math 200 True")],
    "README.md#0": [r"users-main 0 UserAdded\(user_id='[0-9a-f]{12}', name='ada'\)", re.escape("0 ['ada']")],
    "README.md#2": [re.escape("1 1 ['ada']")],
    "README.md#3": [r"\[\('[0-9a-f]{12}', 'main', 'ada', 0\)\]"],
    "docs/cli.md#0": [re.escape('UserAdded b\'{"name": "ada"}\''), re.escape("Raw b'\\xff\\x00'")],
    "docs/projections.md#0": [
        r"\[\('[0-9a-f]{12}', 'eu', 'ada lovelace', 1\)\]",
        re.escape("user-directory 2 0"),
    ],
    "docs/projections.md#1": [re.escape("NameTaken: the name 'ada' is taken by ") + "[0-9a-f]{12}"],
    "docs/consistency.md#0": [
        re.escape("user-1 ('user:1', 'username:ada')"),
        re.escape("a user named 'ada' already exists"),
        re.escape("user-2 0 {'lovelace': '1', 'ada': '2'}"),
        re.escape("1"),
    ],
    "docs/consistency.md#1": [
        re.escape("student-s1 ['StudentSubscribed']"),
        re.escape("student-s2 ['StudentSubscribed']"),
        re.escape("course 'math' is full (2 students)"),
    ],
    "docs/consistency.md#2": [re.escape("1 ['art', 'math']")],
    "docs/observability.md#0": [re.escape("['read_stream users', 'append users', 'execute users']"), "00"],
    "docs/personal-data.md#0": [
        re.escape("False ['7f3a']"),
        re.escape("{'email': 'ada@example.com', 'name': 'Ada'}"),
        "1",
        re.escape("{'email': None, 'name': 'anonymous'}"),
        re.escape("{'email': 'grace@example.com', 'name': 'Grace'}"),
    ],
    "docs/personal-data.md#1": [re.escape("KeyNotLoaded u1"), re.escape("call back on Monday")],
    "docs/quickstart.md": [re.escape("account-42 0 10"), re.escape("account-42 1 7")],
    "docs/snapshots.md#0": [
        re.escape("LoadedState(state=Account(balance=2500, deposits=250), version=249)"),
        re.escape("Account(balance=1510, deposits=151)"),
    ],
    "docs/stores/sqlite.md#0": [re.escape("0 1"), re.escape('UserAdded b\'{"name": "Ada"}\'')],
}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def name_of(page: Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks(page: Path) -> list[str]:
    return [body for language, body in FENCE.findall(page.read_text()) if language == "python"]


def is_one_program(page: Path) -> bool:
    text = page.read_text()
    return PROGRAM in text[: text.find("```python")]


def programs() -> list[tuple[str, list[str]]]:
    """Every page's runnable code: ``(page, blocks)`` for a one-program page, ``(page#i, [block])`` else."""
    found: list[tuple[str, list[str]]] = []
    for page in pages():
        blocks = python_blocks(page)
        if is_one_program(page):
            found.append((name_of(page), blocks))
        else:
            found += [(f"{name_of(page)}#{i}", [b]) for i, b in enumerate(blocks) if not NOT_RUN.search(b)]
    return found


def run(sources: list[str], name: str) -> list[str]:
    namespace: dict[str, object] = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for index, source in enumerate(sources):
            # dont_inherit: as a file of its own would run, not under this module's `from __future__` imports
            exec(compile(source, f"{name}#{index}", "exec", dont_inherit=True), namespace)
    return out.getvalue().splitlines()


def test_every_fence_is_a_language_the_test_knows() -> None:
    for page in pages():
        assert {language for language, _ in FENCE.findall(page.read_text())} <= LANGUAGES, name_of(page)


def test_only_the_pinned_blocks_are_not_run() -> None:
    marked = set()
    for page in pages():
        for index, block in enumerate(python_blocks(page)):
            if NOT_RUN.search(block):
                assert not is_one_program(page), f"{name_of(page)}: a one-program page runs every block"
                marked.add(f"{name_of(page)}#{index}")
    assert marked == NOT_RUN_BLOCKS


def test_every_block_is_run_or_pinned_as_not_run() -> None:
    run_blocks = sum(len(blocks) for _, blocks in programs())
    assert run_blocks + len(NOT_RUN_BLOCKS) == sum(len(python_blocks(page)) for page in pages())
    assert [name for name, _ in programs() if "#" not in name] == ["docs/quickstart.md"]  # the one-program pages


@pytest.mark.parametrize(("name", "sources"), programs(), ids=[name for name, _ in programs()])
def test_docs_code_runs(name: str, sources: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that write files (sqlite:///users.db) write them here
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # `epoch`
    printed = run(sources, name)
    expected = PRINTED.get(name, [])
    assert len(printed) == len(expected), printed
    for line, pattern in zip(printed, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def console_sessions() -> list[tuple[str, str, str]]:
    """``(page#i, the Python block before it, the console block)`` for every console block."""
    found = []
    for page in pages():
        before = None
        for index, (language, body) in enumerate(FENCE.findall(page.read_text())):
            if language == "python":
                before = body
            elif language == "console":
                assert before is not None, f"{name_of(page)}: a console block needs a Python block before it"
                found.append((f"{name_of(page)}#{index}", before, body))
    return found


def shown(lines: list[str]) -> list[str]:
    """Lines as compared: timings and rates vary, the spacing of columns does not matter."""
    return [" ".join(re.sub(r"\d+\.\d+", "N", line).split()) for line in lines]


@pytest.mark.parametrize(("name", "before", "session"), console_sessions(), ids=[n for n, _, _ in console_sessions()])
def test_console_sessions_print_what_they_show(
    name: str, before: str, session: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run([before], name)
    commands: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    assert commands, session
    epoch = str(Path(sys.executable).parent / "epoch")
    for command, expected in commands:
        argv = shlex.split(command)
        assert argv[0] == "epoch", command
        done = subprocess.run([epoch, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (0, ""), command
        assert shown(done.stdout.splitlines()) == shown(expected), command


def test_the_quickstart_passes_mypy_strict(tmp_path: Path) -> None:
    program = tmp_path / "quickstart.py"
    program.write_text("\n".join(python_blocks(ROOT / "docs" / "quickstart.md")))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "Success: no issues found in 1 source file\n", "")
