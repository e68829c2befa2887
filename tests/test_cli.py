"""The command line: ``epoch demo`` (twice, on the default SQLite store), streams, read, tail."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epoch import NewEvent, open_store
from epoch._payload import bytes_of
from epoch.cli import app
from tests.payloads import SHOWN_AS_BYTES, SHOWN_AS_JSON, plant_old_metadata

ROOT = Path(__file__).resolve().parent.parent
EPOCH = [sys.executable, "-m", "epoch.cli"]


def run_epoch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EPOCH, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def demo_lines(stream: str, first_position: int) -> list[str]:
    """What ``epoch demo`` prints on the default store, line by line, as patterns: ids, the racers'
    versions and attempts, and the order of their events vary from run to run; nothing else does."""
    user = r"[0-9a-f]{12}"

    def event(version: int, type: str, name: str) -> str:
        padded = f"v{version:<3} pos {first_position + version:<6} {type:<12} "
        return re.escape(f"  {padded}") + rf'\{{"user_id":"{user}","name":"{name}"\}}'

    racers = "alan|edsger|donald|margaret|ken"
    return [
        re.escape(f"Users directory stream '{stream}' on the default store (sqlite:///epoch.db)"),
        re.escape("Each step says what it shows, then lists the events it wrote (v: version in the stream,"),
        re.escape("pos: position in the store's log)."),
        "",
        re.escape("1. Commands become events: decide turns each command into events, appended to the stream."),
        re.escape("   AddUser(ada), AddUser(grace), UpdateUser(ada -> 'ada lovelace'):"),
        event(0, "UserAdded", "ada"),
        event(1, "UserAdded", "grace"),
        event(2, "UserUpdated", "ada lovelace"),
        "",
        re.escape("2. decide may refuse a command or decide nothing; either way nothing is written."),
        re.escape("   AddUser(grace) again is refused by decide: DuplicateName: a user named 'grace' already exists"),
        re.escape("   UpdateUser with the same name decides nothing: 0 events, version 2"),
        "",
        re.escape("3. An explicit expected_version (e.g. from an HTTP If-Match) is checked once, never retried."),
        re.escape("   We load the directory at version 2; meanwhile another writer adds linus:"),
        event(3, "UserAdded", "linus"),
        re.escape("   AddUser(barbara) expecting version 2 is refused, nothing written:"),
        re.escape(f"   WrongExpectedVersion: {stream}: expected version 2, actual 3"),
        "",
        re.escape("4. Without expected_version, racing writers re-load, re-decide and retry: 5 add a user at once."),
        *(rf"   AddUser\({name:<9}\) -> version [4-8], decided [1-5]x" for name in racers.split("|")),
        r"   (\d+) retries after conflicts; every user was added exactly once:",
        *(event(version, "UserAdded", f"({racers})") for version in range(4, 9)),
        "",
        re.escape("5. Time travel: state_at folds the events up to a version; at 1, after grace was added:"),
        rf"   {user}  ada",
        rf"   {user}  grace",
        re.escape("   ... and now it has 8 users: ada lovelace, alan, donald, edsger, grace, ken, linus, margaret"),
        "",
        re.escape("Next (in a checkout, epoch is .venv/bin/epoch):"),
        re.escape("  epoch streams                            # every stream in the store"),
        re.escape(f"  {'epoch read ' + stream:<40} # this directory's events"),
        re.escape("  epoch tail --follow                      # the global log, live"),
        re.escape("  epoch serve                              # the web explorer"),
        re.escape("  make test                                # the whole suite"),
    ]


def test_demo_runs_twice_on_the_default_sqlite_store(tmp_path: Path) -> None:
    env = {"EPOCH_STORE": "", "PYTHONPATH": str(ROOT)}
    for run in range(2):
        done = run_epoch("demo", cwd=tmp_path, env=env)
        assert (done.returncode, done.stderr) == (0, "")
        lines = done.stdout.splitlines()
        stream = re.fullmatch(r"Users directory stream '(users-[0-9a-f]{8})' on .*", lines[0])
        assert stream is not None, lines[0]
        patterns = demo_lines(stream.group(1), first_position=1 + 9 * run)
        assert len(lines) == len(patterns), done.stdout
        for line, pattern in zip(lines, patterns, strict=True):
            assert re.fullmatch(pattern, line), (line, pattern)
        racers = [re.fullmatch(r"   AddUser\((\w+) *\) -> version (\d), decided (\d)x", line) for line in lines[21:26]]
        versions = sorted(int(m.group(2)) for m in racers if m)
        retries = sum(int(m.group(3)) - 1 for m in racers if m)
        assert versions == [4, 5, 6, 7, 8]  # each racer's user added once, at its own version
        assert lines[26] == f"   {retries} retries after conflicts; every user was added exactly once:"
        names = [json.loads(line.split(maxsplit=4)[4])["name"] for line in lines[27:32]]
        by_version = {int(m.group(2)): m.group(1) for m in racers if m}
        assert names == [by_version[version] for version in range(4, 9)]
    assert (tmp_path / "epoch.db").exists()
    listed = run_epoch("streams", "--json", cwd=tmp_path, env=env)
    rows = json.loads(listed.stdout)
    assert len(rows) == 2
    assert all(row["stream"].startswith("users-") and row["version"] == 8 for row in rows)


@pytest.fixture
def filled(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def fill() -> None:
        async with open_store(url) as store:
            await store.append("users-1", [NewEvent("UserAdded", b'{"name": "ada"}', b'{"$command_id": "c1"}')])
            await store.append("users-1", [NewEvent("UserUpdated", b"\xff\x00")])
            await store.append("orders-9", [NewEvent("Placed", b"{}")])

    asyncio.run(fill())
    return url


def test_streams_read_and_tail(filled: str) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["streams", "--store", filled])
    assert listed.exit_code == 0, listed.output
    assert "users-1  v1  2 events" in listed.output
    assert "2 streams" in listed.output
    only = runner.invoke(app, ["streams", "--store", filled, "--json", "--category", "orders"])
    assert [row["stream"] for row in json.loads(only.output)] == ["orders-9"]

    read = runner.invoke(app, ["read", "users-1", "--store", filled, "--json"])
    events = json.loads(read.output)
    assert [e["version"] for e in events] == [0, 1]
    assert events[0]["data"] == {"name": "ada"}
    assert events[0]["metadata"] == {"$command_id": "c1"}
    assert events[1]["data"] == {"$bytes": "/wA="}  # not JSON: shown as base64, never dropped
    backwards = runner.invoke(app, ["read", "users-1", "--store", filled, "--backwards", "--limit", "1"])
    assert "users-1@1  UserUpdated" in backwards.output

    tail = runner.invoke(app, ["tail", "--store", filled, "--json"])
    lines = [json.loads(line) for line in tail.output.splitlines()]
    assert [(e["stream"], e["version"]) for e in lines] == [("users-1", 0), ("users-1", 1), ("orders-9", 0)]


def test_tail_follow_prints_new_events(filled: str, tmp_path: Path) -> None:
    follower = subprocess.Popen(
        [*EPOCH, "tail", "--follow", "--json", "--store", filled, "--category", "users"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [e["version"] for e in first] == [0, 1]

        async def write() -> None:
            async with open_store(filled) as store:
                await store.append("users-2", [NewEvent("UserAdded", b'{"name": "grace"}')])

        started = time.monotonic()
        asyncio.run(write())
        live = json.loads(follower.stdout.readline())
        assert (live["stream"], live["data"]) == ("users-2", {"name": "grace"})
        assert time.monotonic() - started < 5
    finally:
        follower.kill()
        follower.wait()
        if follower.stdout is not None:
            follower.stdout.close()


def test_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    done = run_epoch("streams", "--store", "nosuch://x", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        "error: unknown store URL 'nosuch://x': use memory://, sqlite:///path.db, postgresql://... or kurrentdb://...\n"
    )
    assert "Traceback" not in done.stderr


# -- stored bytes that are not JSON, and names that would break a line (issue 8 item 7) -------


@pytest.fixture
def hostile_store(tmp_path: Path) -> str:
    """One stream per entry of SHOWN_AS_BYTES, then one holding every SHOWN_AS_JSON payload."""
    url = f"sqlite:///{tmp_path / 'hostile.db'}"

    async def fill() -> None:
        async with open_store(url) as store:
            for i, raw in enumerate(SHOWN_AS_BYTES.values()):
                await store.append(f"bytes-{i}", [NewEvent("Odd", raw, b"")])
            await store.append("json-1", [NewEvent("Fine", raw, b"") for raw in SHOWN_AS_JSON])

    asyncio.run(fill())
    return url


def test_read_json_shows_what_is_not_json_as_base64_bytes(hostile_store: str) -> None:
    runner = CliRunner()
    for i, (name, raw) in enumerate(SHOWN_AS_BYTES.items()):
        done = runner.invoke(app, ["read", f"bytes-{i}", "--store", hostile_store, "--json"])
        assert done.exit_code == 0, (name, done.output)
        [event] = json.loads(done.stdout)  # the output is JSON, whatever was stored
        assert event["data"] == {"$bytes": base64.b64encode(raw).decode()}, name
        assert bytes_of(event["data"]) == raw, name  # the base64 round-trips to the exact stored bytes
        assert event["metadata"] is None and bytes_of(event["metadata"]) == b""


def test_read_json_keeps_json_tokens_verbatim(hostile_store: str) -> None:
    done = CliRunner().invoke(app, ["read", "json-1", "--store", hostile_store, "--json"])
    assert done.exit_code == 0, done.output
    events = json.loads(done.stdout)
    assert [e["data"] for e in events] == [json.loads(raw) for raw in SHOWN_AS_JSON]
    assert [bytes_of(e["data"]) for e in events] == [None] * len(SHOWN_AS_JSON)  # none reads as bytes
    for compact in SHOWN_AS_JSON.values():
        assert b'"data":' + compact + b',"metadata":null}' in done.stdout_bytes  # every digit, both "a"s
    assert events[1]["data"] == {"a": 2**100}


def test_tail_json_is_one_json_object_per_line(hostile_store: str) -> None:
    done = CliRunner().invoke(app, ["tail", "--store", hostile_store, "--json", "--after", "0"])
    assert done.exit_code == 0, done.output
    lines = done.stdout.split("\n")
    assert lines[-1] == ""
    events = [json.loads(line) for line in lines[:-1]]
    assert len(events) == len(SHOWN_AS_BYTES) + len(SHOWN_AS_JSON)
    assert [bytes_of(e["data"]) for e in events[: len(SHOWN_AS_BYTES)]] == list(SHOWN_AS_BYTES.values())


def test_plain_read_escapes_what_would_break_the_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"

    async def fill() -> None:
        async with open_store(url) as store:
            await store.append("notes-a\u2028b", [NewEvent("Note\u202e", b"\x1b[31mred\x1b[0m\r\n\xff\x00")])
            await store.append("notes-a\u2028b", [NewEvent("Note", b'{"a": "\xc2\x9b2J\\u001b"}')])

    asyncio.run(fill())
    runner = CliRunner()
    done = runner.invoke(app, ["read", "notes-a\u2028b", "--store", url])
    assert done.exit_code == 0, done.output
    assert done.stdout == (
        "       1  notes-a\\u2028b@0  Note\\u202e  \\x1b[31mred\\x1b[0m\\r\\n\\xff\\x00\n"
        '       2  notes-a\\u2028b@1  Note  {"a":"\\x9b2J\\u001b"}\n'
    )
    listed = runner.invoke(app, ["streams", "--store", url])
    assert listed.stdout == "notes-a\\u2028b  v1  2 events  last position 2\n1 streams\n"


def test_metadata_a_store_returns_unparseable_is_shown_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    planted = asyncio.run(plant_old_metadata(path, "users-old"))
    done = CliRunner().invoke(app, ["read", "users-old", "--store", f"sqlite:///{path}", "--json"])
    assert done.exit_code == 0, done.output
    shown = {e["id"]: e["metadata"] for e in json.loads(done.stdout)}
    assert {i: bytes_of(m) for i, m in shown.items()} == planted


def test_epoch_errors_are_one_line_on_stderr() -> None:
    done = CliRunner().invoke(app, ["read", " users-1", "--store", "memory://"])
    assert (done.exit_code, done.stdout) == (1, "")
    assert done.stderr == "error: invalid stream name ' users-1': has leading or trailing whitespace\n"


def test_output_never_fails_on_the_terminal_encoding(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'latin.db'}"

    async def fill() -> None:
        async with open_store(url) as store:
            await store.append("notes-é語", [NewEvent("Note", '{"a": "é語"}'.encode())])

    asyncio.run(fill())

    def epoch_bytes(*args: str) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "PYTHONIOENCODING": "latin-1"}  # a terminal without "語"
        return subprocess.run([*EPOCH, *args, "--store", url], cwd=tmp_path, capture_output=True, timeout=120, env=env)

    as_json = epoch_bytes("read", "notes-é語", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [event] = json.loads(as_json.stdout.decode("utf-8"))  # JSON is UTF-8 whatever the terminal takes
    assert (event["stream"], event["data"]) == ("notes-é語", {"a": "é語"})
    plain = epoch_bytes("read", "notes-é語")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.decode("latin-1") == '       1  notes-é\\u8a9e@0  Note  {"a":"é\\u8a9e"}\n'
