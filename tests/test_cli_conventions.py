"""CLI conventions (issue 9 item 4): one-line errors with exit 2 (usage) or 1 (runtime), a missing stream
is an error, reading commands never create a SQLite file, an unreachable PostgreSQL fails in seconds, and
every command that prints results takes ``--json``.

Usage errors run both in-process (typer's ``CliRunner``) and through the installed console script.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import typer
from typer.testing import CliRunner, Result

from epoch import NewEvent, open_store
from epoch.cli import app

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "epoch"
# The example's import path moves into the package (issue 9 item 1): take whichever this tree has.
EXAMPLE = "epoch.examples.users"
APP = f"{EXAMPLE}.projections:runner"


def epoch(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def console(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EPOCH_STORE", None)
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


# -- 1. usage errors: one line (plus a hint), exit 2 --------------------------------------------

USAGE_ERRORS = [
    (["read"], "error: missing argument 'stream'\ntry 'epoch read --help'\n"),
    (
        ["read", "users-1", "--limit", "abc"],
        "error: invalid value for '--limit': 'abc' is not an integer\ntry 'epoch read --help'\n",
    ),
    (
        ["read", "users-1", "--from", "1.5"],
        "error: invalid value for '--from': '1.5' is not an integer\ntry 'epoch read --help'\n",
    ),
    (
        ["read", "users-1", "--lmit", "3"],
        "error: no such option: --lmit (did you mean --limit?)\ntry 'epoch read --help'\n",
    ),
    (["read", "users-1", "users-2"], "error: unexpected extra argument: users-2\ntry 'epoch read --help'\n"),
    (["read", "users-1", "--limit"], "error: option '--limit' requires an argument\n"),
    (["raed", "users-1"], "error: no such command 'raed' (did you mean 'read'?)\ntry 'epoch --help'\n"),
    (["streams", "--jsn"], "error: no such option: --jsn (did you mean --json?)\ntry 'epoch streams --help'\n"),
    (["streams", "--category"], "error: option '--category' requires an argument\n"),
    (["tail", "--after", "x"], "error: invalid value for '--after': 'x' is not an integer\ntry 'epoch tail --help'\n"),
    (["tail", "--folow"], "error: no such option: --folow (did you mean --follow?)\ntry 'epoch tail --help'\n"),
    (["copy", "memory://"], "error: missing argument 'dst_url'\ntry 'epoch copy --help'\n"),
    (
        ["copy", "memory://", "memory://", "--chunk-size", "many"],
        "error: invalid value for '--chunk-size': 'many' is not an integer\ntry 'epoch copy --help'\n",
    ),
    (["migrate", "--store"], "error: option '--store' requires an argument\n"),
    (["migrate", "now"], "error: unexpected extra argument: now\ntry 'epoch migrate --help'\n"),
    (
        ["projections", "stats"],
        "error: no such command 'stats' (did you mean 'status'?)\ntry 'epoch projections --help'\n",
    ),
    (
        ["projections", "status", "--ap", "x"],
        "error: no such option: --ap (did you mean --app, --help?)\ntry 'epoch projections status --help'\n",
    ),
    (["projections", "rebuild"], "error: missing argument 'name'\ntry 'epoch projections rebuild --help'\n"),
    (
        ["projections", "rebuild", "users", "--store", "memory://"],
        "error: rebuild needs --app module:attr (or $EPOCH_APP) to find the projection\n"
        "try 'epoch projections rebuild --help'\n",
    ),
    (
        ["serve", "--port", "http"],
        "error: invalid value for '--port': 'http' is not an integer\ntry 'epoch serve --help'\n",
    ),
    (
        ["serve", "--port", "99999"],
        "error: invalid value for '--port': '99999' is not <= 65535\ntry 'epoch serve --help'\n",
    ),
    (["serve", "--port", "-1"], "error: invalid value for '--port': '-1' is not >= 0\ntry 'epoch serve --help'\n"),
    (
        ["bench", "--impls", "nope"],
        "error: invalid value for '--impls': unknown impl 'nope': use epoch, eventsourcing, raw, epoch-otel, "
        "epoch-no-otel\ntry 'epoch bench --help'\n",
    ),
    (
        ["bench", "--impls", "epoch,nope,raw,x"],
        "error: invalid value for '--impls': unknown impl 'nope', 'x': use epoch, eventsourcing, raw, epoch-otel, "
        "epoch-no-otel\ntry 'epoch bench --help'\n",
    ),
    (
        ["bench", "--impls", ","],
        "error: invalid value for '--impls': unknown impl ',': use epoch, eventsourcing, raw, epoch-otel, "
        "epoch-no-otel\ntry 'epoch bench --help'\n",
    ),
    (
        ["demo", "--stor", "x"],
        "error: no such option: --stor (did you mean --json, --port, --store?)\ntry 'epoch demo --help'\n",
    ),
    (["bench", "--rounds", "0"], "error: invalid value for '--rounds': '0' is not >= 1\ntry 'epoch bench --help'\n"),
]


@pytest.mark.parametrize(("args", "stderr"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], stderr: str) -> None:
    done = epoch(*args)
    assert (done.exit_code, done.stdout, done.stderr) == (2, "", stderr)


def test_the_console_script_prints_usage_errors_the_same_way() -> None:
    for args, stderr in USAGE_ERRORS[:8]:
        done = console(*args)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", stderr), args


def test_a_control_character_in_a_typo_cannot_break_the_line() -> None:
    done = epoch("read", "users-1", "--limit", "1\n\x1b[2J")
    assert (done.exit_code, done.stdout) == (2, "")
    assert done.stderr == (
        "error: invalid value for '--limit': '1\\n\\x1b[2J' is not an integer\ntry 'epoch read --help'\n"
    )


# -- 2. reading a stream that does not exist -------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'written.db'}"

    async def fill() -> None:
        async with open_store(url) as store:
            await store.append("users-1", [NewEvent("UserAdded", b'{"name": "ada"}')])
            await store.append("users-2", [NewEvent("UserAdded", b'{"name": "bob"}')])
            await store.delete_stream("users-2")

    asyncio.run(fill())
    return url


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
@pytest.mark.parametrize("stream", ["users-9", "users-2"], ids=["never-written", "deleted"])
def test_read_of_a_missing_stream_is_an_error(written: str, stream: str, as_json: list[str]) -> None:
    done = epoch("read", stream, "--store", written, *as_json)
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"error: no stream '{stream}' in {written}\n")


def test_read_of_a_missing_stream_names_the_default_store(
    written: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EPOCH_STORE", raising=False)
    (tmp_path / "written.db").rename(tmp_path / "epoch.db")
    done = epoch("read", "users-9")
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", "error: no stream 'users-9' in sqlite:///epoch.db\n")


def test_an_existing_stream_read_past_its_end_is_empty_not_missing(written: str) -> None:
    done = epoch("read", "users-1", "--store", written, "--from", "5")
    assert (done.exit_code, done.stdout, done.stderr) == (0, "", "")
    done = epoch("read", "users-1", "--store", written, "--from", "5", "--json")
    assert (done.exit_code, done.stdout, done.stderr) == (0, "[]\n", "")


def test_read_of_a_missing_stream_on_postgres_masks_the_password(pg_dsn: str) -> None:
    parts = urlsplit(pg_dsn)
    # A password the server ignores (trust authentication) still must not be printed.
    with_password = urlunsplit(
        parts._replace(netloc=f"{parts.username or 'postgres'}:s3cret@{parts.hostname}:{parts.port}")
    )
    done = epoch("read", "users-9", "--store", with_password, "--json")
    shown = with_password.replace(":s3cret@", ":***@")
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"error: no stream 'users-9' in {shown}\n")


# -- 3. reading commands never create a SQLite file ---------------------------------------------

READING = [
    ["streams"],
    ["streams", "--json"],
    ["read", "users-1"],
    ["read", "users-1", "--json"],
    ["tail"],
    ["tail", "--json", "--follow"],
    ["projections", "status"],
    ["projections", "status", "--json"],
    ["snapshots", "status"],
    ["snapshots", "status", "--json"],
    ["snapshots", "drop", "users"],
    ["snapshots", "queries", "--json"],
    ["snapshots", "drop-queries"],
    ["serve", "--port", "1"],
]


@pytest.mark.parametrize("args", READING, ids=[" ".join(a) for a in READING])
@pytest.mark.parametrize("where", ["missing.db", "no/such/dir/missing.db"])
def test_reading_commands_never_create_a_store(tmp_path: Path, args: list[str], where: str) -> None:
    url = f"sqlite:///{tmp_path / where}"
    done = epoch(*args, "--store", url)
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"error: no such store: {url}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_relative_path_is_no_such_store(tmp_path: Path) -> None:
    done = console("streams", "--store", "sqlite:///epohc.db", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: no such store: sqlite:///epohc.db\n")
    done = console("read", "users-1", "--json", cwd=tmp_path)  # the default store, not created either
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: no such store: sqlite:///epoch.db\n")
    assert list(tmp_path.iterdir()) == []


def test_copy_reads_an_existing_source_and_creates_the_destination(tmp_path: Path, written: str) -> None:
    missing, destination = tmp_path / "missing.db", tmp_path / "copy.db"
    done = epoch("copy", f"sqlite:///{missing}", f"sqlite:///{destination}")
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"error: no such store: sqlite:///{missing}\n")
    assert not missing.exists() and not destination.exists()
    done = epoch("copy", written, f"sqlite:///{destination}", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["copied"] == 2
    assert destination.exists()


def test_writing_commands_create_the_store(tmp_path: Path) -> None:
    for command in (["migrate"], ["demo", "--json"]):
        path = tmp_path / f"{command[0]}.db"
        done = epoch(*command, "--store", f"sqlite:///{path}")
        assert done.exit_code == 0, done.output
        assert path.exists()


def test_in_memory_sqlite_is_never_missing() -> None:
    done = epoch("streams", "--store", "sqlite://", "--json")
    assert (done.exit_code, done.stdout, done.stderr) == (0, "[]\n", "")


# -- 4. an unreachable PostgreSQL: one line, within seconds -----------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers: like a server behind a dead link."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


UNREACHABLE = [
    ["streams"],
    ["read", "users-1", "--json"],
    ["tail"],
    ["projections", "status", "--json"],
    ["snapshots", "status", "--json"],
    ["migrate"],
    ["serve", "--port", "1"],
]


def test_an_unreachable_postgres_is_one_line_at_once(closed_port: int) -> None:
    url = f"postgresql://epoch:s3cret@127.0.0.1:{closed_port}/epoch"
    for args in UNREACHABLE:
        started = time.monotonic()
        done = console(*args, "--store", url)
        elapsed = time.monotonic() - started
        assert (done.returncode, done.stdout, done.stderr) == (
            1,
            "",
            f"error: cannot reach PostgreSQL at 127.0.0.1:{closed_port} (connection refused)\n",
        ), args
        assert elapsed < 8, (args, elapsed)
    done = console("copy", url, "sqlite:///never.db", cwd=ROOT)
    assert done.stderr == f"error: cannot reach PostgreSQL at 127.0.0.1:{closed_port} (connection refused)\n"
    assert not (ROOT / "never.db").exists()


def test_a_postgres_that_never_answers_fails_within_the_budget(silent_port: int) -> None:
    url = f"postgresql://epoch@127.0.0.1:{silent_port}/epoch"
    for args, budget in ((["streams", "--store", url], 3), (["migrate", "--store", f"{url}?pool_timeout=1"], 1)):
        started = time.monotonic()
        done = console(*args)
        elapsed = time.monotonic() - started
        assert (done.returncode, done.stdout, done.stderr) == (
            1,
            "",
            f"error: cannot reach PostgreSQL at 127.0.0.1:{silent_port} (no answer within {budget} s)\n",
        )
        assert budget <= elapsed < budget + 5, elapsed


def test_a_missing_postgres_database_is_one_line(pg_server_dsn: str) -> None:
    parts = urlsplit(pg_server_dsn)
    url = urlunsplit(parts._replace(path="/no_such_database"))
    done = console("streams", "--store", url)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f'error: cannot reach PostgreSQL at {parts.hostname}:{parts.port} (database "no_such_database" does not exist)\n'
    )


# -- 5. --json everywhere ----------------------------------------------------------------------------


def _leaves(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    commands = getattr(group, "commands", None)
    if commands is None:
        yield path, group
        return
    for name, command in commands.items():
        yield from _leaves(command, (*path, name))


def test_every_command_that_prints_results_takes_json() -> None:
    without = {
        path
        for path, command in _leaves(typer.main.get_command(app))
        if "--json" not in [opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])]
    }
    assert without == {("serve",)}  # it prints where it listens, then serves: no results to print


def test_every_json_output_is_json(tmp_path: Path, written: str) -> None:
    copy, empty = f"sqlite:///{tmp_path / 'copy.db'}", f"sqlite:///{tmp_path / 'empty.db'}"
    for args in (
        ["streams", "--store", written],
        ["read", "users-1", "--store", written],
        ["migrate", "--store", written],
        ["migrate", "--store", empty],
        ["copy", written, copy],
        ["projections", "status", "--store", written],
        ["projections", "status", "--store", written, "--app", APP],
        ["projections", "rebuild", "user-directory", "--store", empty, "--app", APP],  # no Users events to decode
    ):
        done = epoch(*args, "--json")
        assert (done.exit_code, done.stderr) == (0, ""), (args, done.output)
        json.loads(done.stdout)
    done = epoch("tail", "--store", written, "--json")
    assert [json.loads(line)["stream"] for line in done.stdout.splitlines()] == ["users-1", "users-2"]


def test_demo_json_describes_what_it_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = epoch("demo", "--store", url, "--json")
    assert (first.exit_code, first.stderr) == (0, ""), first.output
    summary = json.loads(first.stdout)
    assert set(summary) == {"store", "streams", "events", "output"}
    assert summary["store"] == url
    streams = {row["stream"]: row for row in summary["streams"]}
    for name, row in streams.items():  # each stream's final version and counts match the store
        shown = json.loads(epoch("read", name, "--store", url, "--json").stdout)
        assert row["version"] == shown[-1]["version"] and row["events"] == len(shown)
        assert sum(row["types"].values()) == row["events"]
        assert [e for e in summary["events"] if e["stream"] == name] == shown
    assert all(isinstance(line, str) and "\n" not in line for line in summary["output"])
    second = json.loads(epoch("demo", "--store", url, "--json").stdout)  # only what this run wrote
    assert not {row["stream"] for row in second["streams"]} & set(streams)
    assert second["events"][0]["position"] == summary["events"][-1]["position"] + 1


def test_demo_json_refuses_a_store_that_forgets() -> None:
    done = epoch("demo", "--store", "memory://", "--json")
    assert (done.exit_code, done.stdout) == (1, "")
    assert done.stderr == (
        "error: epoch demo --json reads back what the demo wrote: use a store that outlives it "
        "(sqlite:///demo.db, postgresql://...), not memory://\n"
    )


def test_what_the_cli_checks_a_store_url_with() -> None:
    from epoch.errors import ConfigurationError
    from epoch.stores.postgres import PostgresEventStore
    from epoch.stores.sqlite import SQLiteEventStore

    assert SQLiteEventStore.path_of("sqlite:///relative.db?timeout=1") == "relative.db"
    assert SQLiteEventStore.path_of("sqlite+pysqlite:////abs/x.db") == "/abs/x.db"
    assert SQLiteEventStore.path_of("sqlite://") == ":memory:"
    with pytest.raises(ConfigurationError, match="^a SQLite URL names no host: 'sqlite://host/x.db'"):
        SQLiteEventStore.path_of("sqlite://host/x.db")
    conninfo, options = PostgresEventStore.conninfo_of("postgresql://u@h:5/db?pool_timeout=1.5&sslmode=disable")
    assert (conninfo, options) == ("postgresql://u@h:5/db?sslmode=disable", {"pool_timeout": 1.5})


def test_psycopg_retry_warnings_stay_off_the_terminal() -> None:
    # What the pool logs for each failed reconnect while a command runs (several lines each time).
    script = (
        "import logging; from epoch.cli._stores import quiet_driver_logs; quiet_driver_logs(); "
        "logging.getLogger('psycopg.pool').warning(\"error connecting in 'epoch': connection refused\"); "
        "logging.getLogger('epoch').warning('still shown')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "still shown\n")
