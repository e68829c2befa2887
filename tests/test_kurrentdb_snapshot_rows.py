"""KurrentDB snapshot events that no save could have written: companion-stream metadata that does not
decode, or decodes to numbers out of range. As on the other stores (tests/test_snapshot_rows.py), each is
logged at ``WARNING`` on ``epoch.snapshots`` and left out, never raised: a load goes on to the older
snapshots under it, and folds from the events when none is left.

Anyone allowed to write ``$epoch-snapshots-acc-1`` can append such an event, so the tests append it with
the client, as a real server would take it (tests/kurrentdb_fake.py stands in for the server).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import NewEvent, open_store
from epoch.records import category_of
from epoch.stores.kurrentdb import KurrentDBEventStore
from epoch.testing.contract_snapshots import Add, Total
from tests.hostile import hostile_json, huge_ints
from tests.kurrentdb_fake import FakeKurrentDB
from tests.test_fuzz_stores import Opened
from tests.test_snapshot_rows import FOLD, NEVER, handler, ten_events

_COMPANION = "snapshots-acc-1"
_ROW = "acc-1: snapshot at version {version} ignored: its row is invalid ({why})"
_EVENT = (
    "acc-1: snapshot event {revision} of $epoch-snapshots-acc-1 ignored: its row is invalid"
    " (its metadata is not a snapshot's: {why})"
)
_VERSION = "version {v} is not an int from its first visible version, 0, to the stream's version, 9"
_LISTED = "version {v} is not an int from 0 to 9223372036854775807"
_SCHEMA = "schema_version {v} is not an int from 1 to 9223372036854775807"


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the snapshot checks logged (not what grpc's aio logs of an earlier test's closed loop)."""
    return [r.getMessage() for r in caplog.records if r.name == "epoch.snapshots"]


@pytest.fixture
def fake() -> Iterator[FakeKurrentDB]:
    with FakeKurrentDB() as server:
        yield server


@pytest.fixture
async def store(fake: FakeKurrentDB) -> AsyncIterator[KurrentDBEventStore]:
    async with open_store(fake.uri) as opened:
        assert isinstance(opened, KurrentDBEventStore)
        yield opened


async def genuine(store: KurrentDBEventStore) -> dict[str, Any]:
    """The metadata of the snapshot ``ten_events`` took (at version 5), as the store wrote it."""
    [event] = [e async for e in store.companion_streams().read(_COMPANION)]
    meta: dict[str, Any] = json.loads(event.metadata)
    assert {k: v for k, v in meta.items() if k != "position"} == {"version": 5, "schema_version": 1, "first_visible": 0}
    return meta


async def append_raw(store: KurrentDBEventStore, metadata: bytes, data: bytes = b'{"total": 999, "count": 6}') -> None:
    await store.companion_streams().append(_COMPANION, [NewEvent("$epoch-snapshot", data, metadata)])


_BAD = {"version": "5", "schema_version": 1, "position": 1, "first_visible": 0}


async def assert_folded_from_events(store: KurrentDBEventStore) -> None:
    """No snapshot of ``acc-1`` loads: its load, time travel and next command fold the ten events (four warnings)."""
    assert await store.load_snapshot("acc-1", 1) is None
    assert await handler(store).load("1") == (FOLD, 9)
    assert await handler(store).state_at("1", version=6) == Total(70, 7)
    decided = await handler(store, NEVER).execute("1", Add(1))
    assert (decided.version, decided.state) == (10, Total(101, 11))


@pytest.mark.parametrize(
    ("metadata", "loaded"),
    [
        (b"junk", "JSON is malformed: invalid character (byte 0)"),
        (b"", "Input data was truncated"),
        (b"\xff\xfe\x00", "JSON is malformed: invalid character (byte 0)"),  # not UTF-8
        (b'{"version": "\xff"}', "Expected `int`, got `str` - at `$.version`"),
        (b"[]", "Expected `object`, got `array`"),
        (b"null", "Expected `object`, got `null`"),
        (b"{}", "Object missing required field `version`"),
        (json.dumps(_BAD).encode(), "Expected `int`, got `str` - at `$.version`"),
        (json.dumps({**_BAD, "version": 5.0}).encode(), "Expected `int`, got `float` - at `$.version`"),
        (json.dumps({**_BAD, "version": True}).encode(), "Expected `int`, got `bool` - at `$.version`"),
        (json.dumps({**_BAD, "version": None}).encode(), "Expected `int`, got `null` - at `$.version`"),
        (json.dumps({**_BAD, "version": math.nan}).encode(), "JSON is malformed: invalid character (byte 12)"),
        (json.dumps({**_BAD, "version": math.inf}).encode(), "JSON is malformed: invalid character (byte 12)"),
        (b'{"version": 5, "position": 1e400}', "Number out of range - at `$.position`"),
        (b'{"version": 5, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "maximum recursion depth exceeded while deserializing an object"),
        (json.dumps({**_BAD, "version": 5, "position": "1"}).encode(), "Expected `int`, got `str` - at `$.position`"),
    ],
    ids=lambda value: repr(value)[:60] if isinstance(value, bytes) else None,
)  # fmt: skip
async def test_metadata_that_does_not_decode_is_no_snapshot(
    store: KurrentDBEventStore, metadata: bytes, loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The only snapshot event of the stream is one no save wrote (the true one was dropped first)."""
    await ten_events(store)
    assert await store.drop_snapshots("acc-1") == 1
    await append_raw(store, metadata)  # revision 1 of the companion stream: the dropped one was 0
    logged = _EVENT.format(revision=1, why=loaded)
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        await assert_folded_from_events(store)
    assert warned(caplog) == [logged] * 4
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        assert await store.snapshot_status() == []
    assert warned(caplog) == [logged]
    caplog.clear()
    assert await store.drop_snapshots("acc-1") == 1  # and it can be dropped, without a word
    assert [e async for e in store.companion_streams().read(_COMPANION)] == []
    assert warned(caplog) == []


@pytest.mark.parametrize(
    ("field", "value", "loaded", "listed"),
    [
        ("version", -1, _VERSION.format(v=-1), _LISTED.format(v=-1)),
        ("version", -(2**100), _VERSION.format(v=-(2**100)), _LISTED.format(v=-(2**100))),
        ("version", 2**63, _VERSION.format(v=2**63), _LISTED.format(v=2**63)),
        ("version", 2**100, _VERSION.format(v=2**100), _LISTED.format(v=2**100)),
        ("version", 10, _VERSION.format(v=10), None),  # past the stream: only a load can tell
        ("first_visible", -1, "first_visible -1 is not an int from 0 to 9223372036854775807", None),
        ("first_visible", 2**63, f"first_visible {2**63} is not an int from 0 to 9223372036854775807", None),
        ("first_visible", 6, _VERSION.format(v=5).replace(", 0,", ", 6,"), None),
        ("position", 0, "position 0 is not an int >= 1", None),
        ("position", -(2**100), f"position {-(2**100)} is not an int >= 1", None),
        ("schema_version", 0, None, _SCHEMA.format(v=0)),  # no load asks for it
        ("schema_version", 2**63, None, _SCHEMA.format(v=2**63)),
    ],
)  # fmt: skip
async def test_metadata_out_of_range_is_no_snapshot(
    store: KurrentDBEventStore,
    field: str,
    value: int,
    loaded: str | None,
    listed: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Metadata that decodes, with one number no save writes: ``loaded``, why a load ignores it (``None``:
    no load asks for it, silently); ``listed``, why ``snapshot_status`` leaves it out (``None``: it lists
    it, as the SQL stores list such a row)."""
    await ten_events(store)
    meta = {**await genuine(store), field: value}
    assert await store.drop_snapshots("acc-1") == 1
    await append_raw(store, json.dumps(meta).encode())
    shown = meta["version"]
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        await assert_folded_from_events(store)
    expected = [] if loaded is None else [_ROW.format(version=shown, why=loaded)] * 4
    assert warned(caplog) == expected
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        status = await store.snapshot_status()
    assert [(s.stream, s.version, s.schema_version, s.count) for s in status] == (
        [] if listed else [("acc-1", shown, meta["schema_version"], 1)]
    )
    assert warned(caplog) == ([] if listed is None else [_ROW.format(version=shown, why=listed)])
    assert await store.drop_snapshots("acc-1") == 1


async def test_a_hostile_event_after_a_true_snapshot_leaves_the_true_one_usable(
    store: KurrentDBEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest events are read first: an invalid one is logged and passed over, the true one under it
    is still loaded, listed and counted."""
    await ten_events(store)
    meta = await genuine(store)
    await append_raw(store, b"\x80junk")
    await append_raw(store, json.dumps({**meta, "version": 2**63}).encode())
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        found = await store.load_snapshot("acc-1", 1)
        status = await store.snapshot_status("acc")
    assert found is not None
    assert (found.stream, found.version, found.position, found.schema_version, found.first_visible) == (
        "acc-1",
        5,
        meta["position"],
        1,
        0,
    )
    assert found.data == b'{"total":60,"count":6}'
    assert [(s.stream, s.version, s.schema_version, s.count) for s in status] == [("acc-1", 5, 1, 1)]
    hostile = [
        _ROW.format(version=2**63, why=_VERSION.format(v=2**63)),
        _EVENT.format(revision=1, why="JSON is malformed: invalid character (byte 0)"),
    ]
    listed = [_ROW.format(version=2**63, why=_LISTED.format(v=2**63)), hostile[1]]
    assert warned(caplog) == [*hostile, *listed]
    assert await handler(store).load("1") == (FOLD, 9)
    assert await store.drop_snapshots("acc-1") == 3  # the true one and both hostile events


_NUMBERS = st.one_of(
    huge_ints,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
_FIELDS = st.sampled_from(["version", "schema_version", "position", "first_visible"])


def _valid(metadata: bytes) -> bool:
    """The reference rule for the snapshot of a one-event stream (version 0), looked up at schema 1: a
    JSON object of the save's four fields, ints (not bools) in range."""
    try:
        meta = json.loads(metadata.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    keys = ("version", "schema_version", "first_visible", "position")
    if not isinstance(meta, dict) or any(type(meta.get(key)) is not int for key in keys):
        return False
    return (meta["version"], meta["schema_version"], meta["first_visible"]) == (0, 1, 0) and meta["position"] >= 1


@pytest.fixture
def opened(fake: FakeKurrentDB) -> Iterator[Opened]:
    handle = Opened(fake.uri)
    yield handle
    handle.close()


@given(hostile=st.one_of(st.binary(max_size=80), hostile_json, st.tuples(_FIELDS, _NUMBERS)))
def test_any_metadata_loads_or_is_logged_never_raises(opened: Opened, hostile: bytes | tuple[str, object]) -> None:
    store = opened.store
    assert isinstance(store, KurrentDBEventStore)
    stream = opened.stream()
    appended = opened.run(store.append(stream, [NewEvent("Seeded", b"{}")]))
    if isinstance(hostile, tuple):
        true = {"version": 0, "schema_version": 1, "position": appended.position, "first_visible": 0}
        metadata = json.dumps({**true, hostile[0]: hostile[1]}).encode()
    else:
        metadata = hostile
    snapshot = NewEvent("$epoch-snapshot", b"s", metadata)
    opened.run(store.companion_streams().append(f"snapshots-{stream}", [snapshot]))
    found = opened.run(store.load_snapshot(stream, 1))
    status = opened.run(store.snapshot_status(category_of(stream)))
    if _valid(metadata):
        assert found is not None
        assert (found.stream, found.version, found.schema_version, found.data) == (stream, 0, 1, b"s")
        assert [(s.stream, s.version, s.count) for s in status] == [(stream, 0, 1)]
    else:
        assert found is None
    assert opened.run(store.drop_snapshots(stream)) == 1
    assert opened.run(store.snapshot_status(category_of(stream))) == []
