"""``EventStoreContract``: the behaviour every event store must show, as a reusable pytest suite.

Subclass it in a test module and provide a ``store`` fixture that yields an open, *empty* store::

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        async def store(self):
            async with MyStore(...) as store:
                yield store

epoch runs this same suite on its memory, SQLite and PostgreSQL stores (DESIGN §3).
The tests need pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import uuid4

import pytest

from epoch.errors import (
    DuplicateEventId,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidStreamName,
    InvalidVersion,
    WrongExpectedVersion,
)
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, NewEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new, nothing_stored
from epoch.testing.contract_ids import DuplicateIdContract
from epoch.testing.contract_lifecycle import LifecycleContract
from epoch.testing.contract_log import LogContract

__all__ = ["EventStoreContract"]


class EventStoreContract(DuplicateIdContract, LogContract, LifecycleContract):
    """Guarantees 1-8 of DESIGN §3, one test each (or a few), against the ``store`` fixture.

    Guarantees split into their own modules come in as mixins (``contract_ids``: event ids stored twice;
    ``contract_log``: per-stream order, filters and numbers — guarantees 10, 11 and 13;
    ``contract_lifecycle``: soft delete, subscriptions and closing).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- append and read ------------------------------------------------------------------------

    async def test_append_to_new_stream(self, store: EventStore) -> None:
        result = await store.append("users-1", new(3), NO_STREAM)
        assert result.stream == "users-1"
        assert result.version == 2
        assert len(result.positions) == 3
        assert result.positions == tuple(sorted(result.positions))
        assert len(set(result.positions)) == 3
        assert result.position == result.positions[-1]
        assert result.recorded_at is not None and result.recorded_at.tzinfo is not None
        assert await store.stream_version("users-1") == 2
        assert await store.head_position() == result.position

    async def test_read_stream_returns_what_was_appended(self, store: EventStore) -> None:
        events = new(3)
        result = await store.append("users-1", events)
        recorded = await collect(store.read_stream("users-1"))
        assert [r.version for r in recorded] == [0, 1, 2]
        assert [r.id for r in recorded] == [e.id for e in events]
        assert [r.data for r in recorded] == [e.data for e in events]
        assert [r.metadata for r in recorded] == [e.metadata for e in events]
        assert [r.type for r in recorded] == ["Happened"] * 3
        assert [r.position for r in recorded] == list(result.positions)
        assert all(r.stream == "users-1" for r in recorded)

    async def test_versions_are_dense_across_appends(self, store: EventStore) -> None:
        for expected in (None, 0, 2, 3):
            await store.append("s-1", new(2 if expected in (0,) else 1), expected)
        versions = [r.version for r in await collect(store.read_stream("s-1"))]
        assert versions == [0, 1, 2, 3, 4]

    async def test_read_stream_bounds(self, store: EventStore) -> None:
        await store.append("s-1", new(5))
        forwards = await collect(store.read_stream("s-1", from_version=2))
        assert [r.version for r in forwards] == [2, 3, 4]
        limited = await collect(store.read_stream("s-1", from_version=1, limit=2))
        assert [r.version for r in limited] == [1, 2]
        backwards = await collect(store.read_stream("s-1", backwards=True))
        assert [r.version for r in backwards] == [4, 3, 2, 1, 0]
        back_from = await collect(store.read_stream("s-1", from_version=2, backwards=True, limit=2))
        assert [r.version for r in back_from] == [2, 1]
        assert await collect(store.read_stream("s-1", from_version=9)) == []
        last = await collect(store.read_stream("s-1", backwards=True, limit=1))
        assert [r.version for r in last] == [4]
        assert await collect(store.read_stream("s-1", limit=0)) == []

    async def test_unwritten_stream_reads_empty(self, store: EventStore) -> None:
        assert await collect(store.read_stream("nobody-1")) == []
        assert await store.stream_version("nobody-1") is None
        assert await store.head_position() == 0
        assert await collect(store.read_all()) == []

    async def test_negative_bounds_are_refused(self, store: EventStore) -> None:
        with pytest.raises(InvalidVersion):
            await collect(store.read_stream("s-1", from_version=-1))
        with pytest.raises(InvalidVersion):
            await collect(store.read_all(after=-1))
        with pytest.raises(InvalidVersion):
            await collect(store.read_all(limit=-1))

    # -- expected version -----------------------------------------------------------------------

    async def test_expected_version_int(self, store: EventStore) -> None:
        await store.append("s-1", new(2))
        result = await store.append("s-1", new(1), 1)
        assert result.version == 2
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new(1), 1)
        assert (info.value.stream, info.value.expected, info.value.actual) == ("s-1", 1, 2)
        assert "s-1" in str(info.value) and "1" in str(info.value) and "2" in str(info.value)
        assert await store.stream_version("s-1") == 2

    async def test_expected_no_stream(self, store: EventStore) -> None:
        await store.append("s-1", new(1), NO_STREAM)
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new(1), NO_STREAM)
        assert info.value.actual == 0
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", new(1), None)
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-2", new(1), 0)
        assert info.value.actual is None

    async def test_expected_stream_exists(self, store: EventStore) -> None:
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new(1), STREAM_EXISTS)
        assert info.value.actual is None
        assert await nothing_stored(store, "s-1")
        await store.append("s-1", new(1))
        assert (await store.append("s-1", new(1), STREAM_EXISTS)).version == 1

    async def test_expected_any(self, store: EventStore) -> None:
        assert (await store.append("s-1", new(1), ANY)).version == 0
        assert (await store.append("s-1", new(1), ANY)).version == 1

    @pytest.mark.parametrize("bad", [True, False, -1, "1", 1.0, "any"])
    async def test_invalid_expected_version(self, store: EventStore, bad: Any) -> None:
        with pytest.raises(InvalidExpectedVersion) as info:
            await store.append("s-1", new(1), bad)
        assert info.value.stream == "s-1"
        assert isinstance(info.value, ValueError)
        assert await nothing_stored(store, "s-1")

    async def test_empty_append_checks_guard_and_writes_nothing(self, store: EventStore) -> None:
        empty = await store.append("s-1", [], NO_STREAM)
        assert (empty.version, empty.position, empty.positions) == (None, 0, ())
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", [], 0)
        written = await store.append("s-1", new(2))
        again = await store.append("s-1", [], 1)
        assert (again.version, again.position, again.positions) == (1, written.position, ())
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", [], NO_STREAM)
        assert await store.head_position() == written.position

    # -- guarantee 2: concurrency ---------------------------------------------------------------

    async def test_racing_appends_exactly_one_wins(self, store: EventStore) -> None:
        await store.append("race-1", new(1))

        async def attempt(i: int) -> int | str:
            try:
                result = await store.append("race-1", new(2, prefix=b"%d" % i), 0)
            except WrongExpectedVersion as exc:
                assert exc.actual == 2
                return "lost"
            return result.version or 0

        outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert outcomes.count(2) == 1
        assert outcomes.count("lost") == 15
        assert [r.version for r in await collect(store.read_stream("race-1"))] == [0, 1, 2]

    async def test_concurrent_appends_to_many_streams(self, store: EventStore) -> None:
        async def writer(w: int) -> None:
            for i in range(10):
                await store.append(f"w-{w % 4}", new(2, prefix=b"%d-%d" % (w, i)))

        await asyncio.gather(*(writer(w) for w in range(8)))
        everything = await collect(store.read_all())
        assert len(everything) == 8 * 10 * 2
        positions = [r.position for r in everything]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        for s in range(4):
            versions = [r.version for r in await collect(store.read_stream(f"w-{s}"))]
            assert versions == list(range(40))

    # -- read_all and categories ----------------------------------------------------------------

    async def test_read_all_in_position_order(self, store: EventStore) -> None:
        a = await store.append("users-1", new(2))
        b = await store.append("orders-1", new(1))
        c = await store.append("users-2", new(1))
        everything = await collect(store.read_all())
        assert [r.position for r in everything] == [*a.positions, *b.positions, *c.positions]
        assert [r.stream for r in everything] == ["users-1", "users-1", "orders-1", "users-2"]
        after = await collect(store.read_all(after=a.position))
        assert [r.position for r in after] == [*b.positions, *c.positions]
        assert [r.position for r in await collect(store.read_all(limit=2))] == list(a.positions)
        assert await collect(store.read_all(after=c.position)) == []
        assert await store.head_position() == c.position

    async def test_read_all_by_category(self, store: EventStore) -> None:
        await store.append("users-1", new(1))
        await store.append("orders-1", new(1))
        await store.append("users-2", new(1))
        await store.append("audit", new(1))
        users = await collect(store.read_all(categories="users"))
        assert [r.stream for r in users] == ["users-1", "users-2"]
        both = await collect(store.read_all(categories=["users", "audit"]))
        assert [r.stream for r in both] == ["users-1", "users-2", "audit"]
        assert [r.stream for r in await collect(store.read_all(categories=["users"], limit=1))] == ["users-1"]
        assert await collect(store.read_all(categories=["nothing"])) == []

    async def test_invalid_category_is_refused(self, store: EventStore) -> None:
        with pytest.raises(InvalidStreamName):
            await collect(store.read_all(categories="users-1"))
        with pytest.raises(InvalidStreamName):
            await collect(store.read_all(categories=[""]))

    # -- guarantee 5: idempotent writes ---------------------------------------------------------

    async def test_same_ids_same_place_is_a_no_op(self, store: EventStore) -> None:
        events = new(3)
        first = await store.append("s-1", events, NO_STREAM)
        again = await store.append("s-1", events, NO_STREAM)
        assert again == first
        also = await store.append("s-1", events, ANY)
        assert also == first
        assert await store.stream_version("s-1") == 2
        assert await store.head_position() == first.position

    async def test_idempotent_retry_after_later_writes(self, store: EventStore) -> None:
        batch = new(2)
        await store.append("s-1", new(1))
        first = await store.append("s-1", batch, 0)
        await store.append("s-1", new(1), 2)
        again = await store.append("s-1", batch, 0)
        assert again == first
        assert await store.stream_version("s-1") == 3

    async def test_duplicate_ids_inside_one_batch(self, store: EventStore) -> None:
        event = new(1)[0]
        with pytest.raises(DuplicateEventId):
            await store.append("s-1", [event, event])
        assert await nothing_stored(store, "s-1")

    async def test_get_event(self, store: EventStore) -> None:
        events = new(2)
        await store.append("s-1", events)
        found = await store.get_event(events[1].id)
        assert found is not None and (found.stream, found.version, found.data) == ("s-1", 1, events[1].data)
        assert await store.get_event(uuid4()) is None
        hinted = await store.get_event(events[1].id, stream="s-1")
        assert hinted is not None
        assert hinted.id == events[1].id
        assert await store.get_event(events[1].id, stream="s-2") is None  # stored elsewhere

    # -- guarantee 6: round trips ---------------------------------------------------------------

    async def test_bytes_round_trip_exactly(self, store: EventStore) -> None:
        payloads = [b"", b"\x00\x01\xff\xfe", bytes(range(256)), "héllo ✓ 𝄞".encode(), b"not json {"]
        metadata = '{"who": "Zoë", "n": 1, "nested": {"ok": [1, 2.5, null]}, "$correlation_id": "c"}'.encode()
        events = [NewEvent("Bytes", payload, metadata) for payload in payloads]
        await store.append("bytes-1", events)
        recorded = await collect(store.read_stream("bytes-1"))
        assert [r.data for r in recorded] == payloads
        assert all(type(r.data) is bytes and type(r.metadata) is bytes for r in recorded)
        assert all(r.metadata == metadata for r in recorded)
        assert [r.data for r in await collect(store.read_all())] == payloads

    async def test_recorded_at_is_utc_now(self, store: EventStore) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        result = await store.append("s-1", new(2))
        after = datetime.now(UTC) + timedelta(seconds=5)
        recorded = await collect(store.read_stream("s-1"))
        for r in recorded:
            assert r.recorded_at.utcoffset() == timedelta(0)
            assert before <= r.recorded_at <= after
        assert recorded[-1].recorded_at == result.recorded_at

    @pytest.mark.parametrize(
        "name",
        ["users-42", "a", "x" * 512, "naïve-Ünïcode-流-🙂", "it's; DROP TABLE events;--", "with space-1", 'q"uote'],
    )
    async def test_stream_names_round_trip(self, store: EventStore, name: str) -> None:
        await store.append(name, new(1))
        recorded = await collect(store.read_stream(name))
        assert [r.stream for r in recorded] == [name]
        assert [r.stream for r in await collect(store.read_all())] == [name]
        assert await store.stream_version(name) == 0

    async def test_event_type_names_round_trip(self, store: EventStore) -> None:
        names = ["T", "x" * 256, "Ünïcode ✓", "it's; --"]
        await store.append("s-1", [NewEvent(name, b"{}") for name in names])
        assert [r.type for r in await collect(store.read_stream("s-1"))] == names

    # -- guarantee 8: bad input -----------------------------------------------------------------

    @pytest.mark.parametrize(
        "name", ["", "x" * 513, " lead", "trail ", "tab\there", "nul\x00", "del\x7f", "c1\x85", "lone\ud800", 42, None]
    )
    async def test_invalid_stream_name(self, store: EventStore, name: Any) -> None:
        with pytest.raises(InvalidStreamName) as info:
            await store.append(name, new(1))
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidStreamName):
            await collect(store.read_stream(name))
        with pytest.raises(InvalidStreamName):
            await store.stream_version(name)
        assert await store.head_position() == 0

    @pytest.mark.parametrize("type_name", ["", "x" * 257, " lead", "ctl\n", "lone\udfff"])
    async def test_invalid_event_type(self, store: EventStore, type_name: str) -> None:
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [*new(1), NewEvent(type_name, b"{}")])
        assert info.value.stream == "s-1" and info.value.index == 1
        assert await nothing_stored(store, "s-1")

    @pytest.mark.parametrize(
        "event",
        [
            NewEvent("T", "a str", b""),  # type: ignore[arg-type]
            NewEvent("T", bytearray(b"{}")),
            NewEvent("T", b"{}", "{}"),  # type: ignore[arg-type]
            NewEvent("T", b"{}", b"[1, 2]"),
            NewEvent("T", b"{}", b"{not json"),
            NewEvent("T", b"{}", b"\xff\xfe"),
            NewEvent("T", b"{}", id="not-a-uuid"),  # type: ignore[arg-type]
            "not an event",
        ],
    )
    async def test_invalid_event(self, store: EventStore, event: Any) -> None:
        await store.append("s-1", new(1))
        with pytest.raises(InvalidEvent):
            await store.append("s-1", [*new(1), event])
        assert await store.stream_version("s-1") == 0
        assert await store.head_position() == (await collect(store.read_all()))[-1].position

    async def test_events_must_be_a_list(self, store: EventStore) -> None:
        with pytest.raises(InvalidEvent):
            await store.append("s-1", new(1)[0])  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent):
            await store.append("s-1", b"bytes")  # type: ignore[arg-type]
        assert await nothing_stored(store, "s-1")

    async def test_event_too_large(self, store: EventStore) -> None:
        limit: int = getattr(store, "max_event_size", 1024 * 1024)
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [NewEvent("Big", b"x" * (limit - 7), b'{"a": 1}')])
        assert str(limit) in str(info.value)
        assert await nothing_stored(store, "s-1")
        fits = await store.append("s-1", [NewEvent("Big", b"x" * (limit - 8), b'{"a": 1}')])
        assert fits.version == 0
        recorded = await collect(store.read_stream("s-1"))
        assert len(recorded[0].data) == limit - 8

    async def test_errors_pickle(self, store: EventStore) -> None:
        await store.append("s-1", new(1))
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new(1), 5)
        copy = pickle.loads(pickle.dumps(info.value))
        assert isinstance(copy, WrongExpectedVersion)
        assert (copy.stream, copy.expected, copy.actual) == ("s-1", 5, 0)
        assert str(copy) == str(info.value)
