"""``epoch snapshots status [--category C]``, ``epoch snapshots drop NAME``, ``epoch snapshots queries`` and
``epoch snapshots drop-queries``, on a SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from epoch import Codec, CommandHandler, open_store
from epoch.cli import app
from epoch.snapshots import Snapshots
from epoch.testing.contract_snapshots import Add, Added, Total, counter


def epoch(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def written(tmp_path: Path) -> str:
    """A SQLite store where acc-1 has snapshots at 10 and 20, acc-2 at 11, and the other category one at 4."""
    url = f"sqlite:///{tmp_path / 'snapshots.db'}"

    async def write() -> None:
        async with open_store(url) as store:
            accounts = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=10))
            for _ in range(25):
                await accounts.execute("1", Add(1))
            await accounts.execute("2", Add(1, times=12))
            other = CommandHandler(store, counter, "other", Codec([Added]), snapshots=Snapshots(every=4, version=3))
            await other.execute("é x", Add(1, times=5))

    asyncio.run(write())
    return url


def test_status_lists_each_stream_with_its_newest_snapshot(written: str) -> None:
    done = epoch("snapshots", "status", "--store", written)
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert [line.rsplit("  taken ", 1)[0] for line in lines] == [
        "acc-1  version 20  schema 1  2 kept",
        "acc-2  version 11  schema 1  1 kept",
        "other-é x  version 4  schema 3  1 kept",
    ]
    as_json = epoch("snapshots", "status", "--category", "acc", "--store", written, "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [{k: v for k, v in row.items() if k != "taken_at"} for row in rows] == [
        {"stream": "acc-1", "version": 20, "schema_version": 1, "snapshots": 2},
        {"stream": "acc-2", "version": 11, "schema_version": 1, "snapshots": 1},
    ]
    assert all(row["taken_at"].endswith("+00:00") for row in rows)


def test_drop_a_stream_then_a_category(written: str) -> None:
    done = epoch("snapshots", "drop", "acc-1", "--store", written)
    assert (done.exit_code, done.stdout) == (0, "dropped 2 snapshots of acc-1\n")
    done = epoch("snapshots", "drop", "acc", "--store", written, "--json")
    assert (done.exit_code, json.loads(done.stdout)) == (0, {"name": "acc", "dropped": 1})
    done = epoch("snapshots", "drop", "acc", "--store", written)
    assert (done.exit_code, done.stdout) == (0, "dropped 0 snapshots of acc\n")
    left = epoch("snapshots", "status", "--store", written, "--json")
    assert [row["stream"] for row in json.loads(left.stdout)] == ["other-é x"]

    async def load() -> object:
        async with open_store(written) as store:  # the events are all still there
            return await CommandHandler(store, counter, "acc", Codec([Added])).load("1")

    assert asyncio.run(load()) == (Total(25, 25), 24)


def test_no_snapshots_and_bad_names(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    asyncio.run(_create(empty))
    done = epoch("snapshots", "status", "--store", empty)
    assert (done.exit_code, done.stdout) == (0, "no snapshots\n")
    done = epoch("snapshots", "status", "--store", empty, "--json")
    assert (done.exit_code, done.stdout) == (0, "[]\n")
    done = epoch("snapshots", "status", "--category", "a-b", "--store", empty)
    assert (done.exit_code, done.stdout, done.stderr) == (
        1,
        "",
        "error: invalid stream name 'a-b': a category contains no '-'\n",
    )
    done = epoch("snapshots", "drop", " acc", "--store", empty)
    assert (done.exit_code, done.stderr) == (
        1,
        "error: invalid stream name ' acc': has leading or trailing whitespace\n",
    )
    done = epoch("snapshots", "drop", "--store", empty)
    assert (done.exit_code, done.stderr) == (2, "error: missing argument 'name'\ntry 'epoch snapshots drop --help'\n")


async def _create(url: str) -> None:
    async with open_store(url):
        pass


# -- DecisionHandler's snapshots ---------------------------------------------------------------------


def test_queries_lists_decision_snapshots_and_drop_queries_drops_them(tmp_path: Path) -> None:
    from epoch import NewEvent
    from tests.test_decision_snapshots import Enroll, handler_for

    url = f"sqlite:///{tmp_path / 'decisions.db'}"

    async def write(erase: bool = False) -> None:
        async with open_store(url) as store:
            if erase:
                await store.append("other-1", [NewEvent("Noted", b"{}")])
                await store.truncate_before("other-1", 1)
                return
            for n in range(6):
                await handler_for(store).execute(Enroll("math", f"s{n}"))

    asyncio.run(write())
    done = epoch("snapshots", "queries", "--store", url)
    assert done.exit_code == 0, done.output
    [line] = done.stdout.splitlines()
    shown, rest = line.split("  key ", 1)
    assert shown == "tag:course:math  schema 1  5 events to position 5  usable"
    as_json = epoch("snapshots", "queries", "--store", url, "--json")
    [row] = json.loads(as_json.stdout)
    assert rest.startswith(row.pop("key")[:12] + "  taken ") and row.pop("taken_at").endswith("+00:00")
    assert row == {"query": "tag:course:math", "schema_version": 1, "position": 5, "events": 5, "usable": True}

    asyncio.run(write(erase=True))
    [row] = json.loads(epoch("snapshots", "queries", "--store", url, "--json").stdout)
    assert row["usable"] is False
    assert (
        "  5 events to position 5  unusable (an erasure since)  key "
        in epoch("snapshots", "queries", "--store", url).stdout
    )

    done = epoch("snapshots", "drop-queries", "--store", url)
    assert (done.exit_code, done.stdout) == (0, "dropped 1 query snapshot\n")
    done = epoch("snapshots", "drop-queries", "--store", url, "--json")
    assert (done.exit_code, json.loads(done.stdout)) == (0, {"dropped": 0})
    done = epoch("snapshots", "queries", "--store", url)
    assert (done.exit_code, done.stdout) == (0, "no query snapshots\n")


def test_queries_leaves_out_a_row_that_is_no_snapshot(tmp_path: Path) -> None:
    import sqlite3

    from tests.test_decision_snapshots import Enroll, handler_for

    url = f"sqlite:///{tmp_path / 'decisions.db'}"

    async def write() -> None:
        async with open_store(url) as store:
            for n in range(6):
                await handler_for(store).execute(Enroll("math", f"s{n}"))
                await handler_for(store).execute(Enroll("art", f"s{n}"))

    asyncio.run(write())
    with sqlite3.connect(tmp_path / "decisions.db") as connection:  # edited by hand: no save writes these
        connection.execute(
            "UPDATE query_snapshots SET taken_at = 9223372036854775807, folded = 'x' WHERE label LIKE '%art'"
        )
    connection.close()
    done = epoch("snapshots", "queries", "--store", url)
    assert done.exit_code == 0, done.output
    [line] = done.stdout.splitlines()  # the art course's row is left out (logged), never a traceback
    assert line.startswith("tag:course:math  schema 1  5 events to position 9  usable  key ")
    [row] = json.loads(epoch("snapshots", "queries", "--store", url, "--json").stdout)
    assert (row["query"], row["events"]) == ("tag:course:math", 5)
    done = epoch("snapshots", "drop-queries", "--store", url)
    assert (done.exit_code, done.stdout) == (0, "dropped 2 query snapshots\n")  # the invalid one too
