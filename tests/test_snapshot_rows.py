"""Stream snapshot rows that no save could have written (edited by hand, corrupt): each is checked as it is
loaded or listed, and an invalid one is logged and left out, never raised and never folded on.

The stream ``acc-1`` holds ten events (versions 0 to 9, ``Add(10)`` each) and one snapshot, at version 5.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
from typing import Any, cast

import pytest

from epoch import Codec, CommandHandler, EventStore, Snapshots, open_store
from epoch.stores import snapshot_store
from epoch.stores.memory import MemoryEventStore
from epoch.testing.contract_snapshots import Add, Added, CountingStore, Total, counter

POLICY = Snapshots(every=5)
NEVER = Snapshots(every=lambda old, new, state: False)
FOLD = Total(100, 10)


def handler(store: EventStore, policy: Snapshots | None = POLICY) -> CommandHandler[Add, Total, Added]:
    return CommandHandler(store, counter, "acc", Codec([Added]), snapshots=policy, cache=None)


async def ten_events(store: EventStore) -> None:
    writer = handler(store)
    for _ in range(10):
        await writer.execute("1", Add(10))  # one snapshot: at version 5


def corrupt(store: EventStore, url: str, change: str) -> None:
    """``UPDATE <the snapshots table> SET <change>``, as a hand would (memory: ``field = value`` in its dict)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute(f"UPDATE snapshots SET {change}")
        connection.close()
    elif url.startswith("postgresql"):
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"UPDATE epoch_snapshots SET {change}")
    else:  # "field = int, field = 'text'" (text as bytes)
        assert isinstance(store, MemoryEventStore)
        fields: dict[str, Any] = {}
        for assignment in re.split(r", (?=\w+ = )", change):
            field, _, value = assignment.partition(" = ")
            fields[field] = value.strip("'").encode() if value.startswith("'") else int(value)
        kept = store._snapshots["acc-1"]
        store._snapshots["acc-1"] = [(first, dataclasses.replace(s, **fields)) for first, s in kept]


_ROW = "acc-1: snapshot at version {version} ignored: its row is invalid ({why})"
_VERSION = "version {v} is not an int from its first visible version, 0, to the stream's version, 9"
_LISTED = "version {v} is not an int from 0 to 9223372036854775807"


def _case(backend: str, change: str, loaded: str, listed: str | None = None) -> Any:
    """``loaded``: why a load ignores the row; ``listed``: why ``snapshot_status`` leaves it out (``None``:
    it lists the stream, whose newest row has what the status shows)."""
    marks = [pytest.mark.postgres] if backend == "postgres" else []
    return pytest.param(backend, change, loaded, listed, marks=marks, id=f"{backend}: {change}")


def _version(value: str) -> tuple[str, str]:
    return _VERSION.format(v=value), _LISTED.format(v=value)


@pytest.mark.parametrize(
    ("store_url", "change", "loaded", "listed"),
    [
        _case("memory", "version = -1", *_version("-1")),
        _case("memory", "position = 0", "position 0 is not an int >= 1"),
        _case("sqlite", "version = -1", *_version("-1")),
        _case("sqlite", "version = -3", *_version("-3")),
        _case("sqlite", "version = version + 0.5", *_version("5.5")),
        _case("sqlite", "position = 0", "position 0 is not an int >= 1"),
        _case("sqlite", "position = 'p'", "position 'p' is not an int >= 1"),
        _case("sqlite", "data = CAST(data AS TEXT)", "data of type str, not bytes"),
        _case("sqlite", "data = 1.5", "data of type float, not bytes"),
        _case("sqlite", "taken_at = 'yesterday'", *["taken_at 'yesterday' is not an instant"] * 2),
        _case("sqlite", "taken_at = 9223372036854775807", *["taken_at 9223372036854775807 is not an instant"] * 2),
        _case("sqlite", "taken_at = 1.5e300", *["taken_at 1.5e+300 is not an instant"] * 2),
        _case("postgres", "version = -1", *_version("-1")),
        _case("postgres", "xid = 0, seq = 0", "position 0 is not an int >= 1"),
        _case("postgres", "taken_at = 'infinity'", *["taken_at None is not an instant"] * 2),
    ],
    indirect=["store_url"],
)  # fmt: skip
async def test_an_invalid_row_is_no_snapshot(
    store_url: str, change: str, loaded: str, listed: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(store_url) as store:
        await ten_events(store)
        corrupt(store, store_url, change)
        version = "5.5" if "0.5" in change else change.removeprefix("version = ") if "version =" in change else "5"
        with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
            assert await handler(store).load("1") == (FOLD, 9)
            assert await handler(store).state_at("1", version=9) == FOLD
            assert await handler(store).state_at("1", version=6) == Total(70, 7)
            decided = await handler(store, NEVER).execute("1", Add(1))  # folds from no snapshot, writes none
            assert (decided.version, decided.state) == (10, Total(101, 11))
        assert [r.getMessage() for r in caplog.records] == [_ROW.format(version=version, why=loaded)] * 4
        caplog.clear()
        capable = snapshot_store(store)
        assert capable is not None
        with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
            status = await capable.snapshot_status()  # never raises: an invalid row is left out
        assert [(s.stream, s.version) for s in status] == ([] if listed else [("acc-1", 5)])
        assert [r.getMessage() for r in caplog.records] == (
            [] if listed is None else [_ROW.format(version=version, why=listed)]
        )
        assert await capable.drop_snapshots("acc-1") == 1  # and it can be dropped


_WRONG = '{"total": 999, "count": 6}'


@pytest.mark.parametrize(
    ("store_url", "change"),
    [
        ("memory", f"data = '{_WRONG}', position = 1"),
        ("sqlite", f"data = CAST('{_WRONG}' AS BLOB), position = 1"),
        pytest.param("postgres", f"data = convert_to('{_WRONG}', 'UTF8'), seq = seq + 1", marks=pytest.mark.postgres),
    ],
    indirect=["store_url"],
)
async def test_a_row_in_range_but_naming_another_event_is_not_folded_on(
    store_url: str, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The store cannot tell it from a true row; the handler reads the snapshot's own event first, finds
    another position there, and folds from the start (as for a stream deleted and re-created since), so
    the state the row holds (in range too, but not the fold's) is never used."""
    async with open_store(store_url) as store:
        await ten_events(store)
        corrupt(store, store_url, change)
        with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
            assert await handler(store).load("1") == (FOLD, 9)
            assert await handler(store).state_at("1", version=7) == Total(80, 8)
            decided = await handler(store, NEVER).execute("1", Add(1))
            assert (decided.version, decided.state) == (10, Total(101, 11))
        assert caplog.records == []


class Elsewhere(CountingStore):
    """A store from elsewhere whose ``load_snapshot`` answers what it was given to."""

    answer: Any = None

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Any:
        return self.answer


@pytest.mark.parametrize(
    ("version", "first", "at_most", "logged"),
    [
        (-1, 0, None, "acc-1: snapshot at version -1 ignored: its versions do not fit (first 0)"),
        (5, 6, None, "acc-1: snapshot at version 5 ignored: its versions do not fit (first 6)"),
        (5, -1, None, "acc-1: snapshot at version 5 ignored: its versions do not fit (first -1)"),
        (5.0, 0, None, "acc-1: snapshot at version 5.0 ignored: its versions do not fit (first 0)"),
        (5, 0, 4, "acc-1: snapshot at version 5 ignored: its versions do not fit (first 0)"),  # past at_most
    ],
)
async def test_a_snapshot_whose_versions_do_not_fit_is_ignored_from_any_store(
    version: Any, first: Any, at_most: int | None, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler checks what any store (KurrentDB's companion streams, a third party's) answers too."""
    store = MemoryEventStore()
    await ten_events(store)
    found = await store.load_snapshot("acc-1", 1)
    assert found is not None
    elsewhere = Elsewhere(store)
    elsewhere.answer = dataclasses.replace(found, version=version, first_visible=first)
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        if at_most is None:
            assert await handler(cast(EventStore, elsewhere)).load("1") == (FOLD, 9)
        else:
            assert await handler(cast(EventStore, elsewhere)).state_at("1", version=at_most) == Total(50, 5)
    assert [r.getMessage() for r in caplog.records] == [logged]
