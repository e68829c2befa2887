"""The command line: ``epoch demo`` (twice, on the default SQLite store), streams, read, tail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epoch import NewEvent, open_store
from epoch.cli import app

ROOT = Path(__file__).resolve().parent.parent
EPOCH = [sys.executable, "-m", "epoch.cli"]


def run_epoch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EPOCH, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_demo_runs_twice_on_the_default_sqlite_store(tmp_path: Path) -> None:
    env = {"EPOCH_STORE": "", "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        done = run_epoch("demo", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "UserAdded" in done.stdout
        assert "UserUpdated" in done.stdout
        assert "WrongExpectedVersion" in done.stdout
        assert "every user was added exactly once" in done.stdout
        assert "Time travel" in done.stdout
        assert "epoch read users-" in done.stdout
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
    assert events[1]["data_base64"] == "/wA="  # not JSON: shown as base64, never dropped
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
    assert done.returncode != 0
    assert "unknown store URL" in done.stderr
    assert "Traceback" not in done.stderr
