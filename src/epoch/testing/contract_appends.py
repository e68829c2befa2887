"""Guarantees 1-3 of DESIGN §3: appends and reads of one stream, the expected version, racing appends.

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from epoch.errors import InvalidExpectedVersion, InvalidVersion, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events, nothing_stored

__all__ = ["AppendContract"]


class AppendContract:
    """Append is atomic and guarded by the expected version; versions are dense; one racer wins."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- append and read ------------------------------------------------------------------------

    async def test_append_to_new_stream(self, store: EventStore) -> None:
        result = await store.append("users-1", new_events(3), NO_STREAM)
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
        events = new_events(3)
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
            await store.append("s-1", new_events(2 if expected in (0,) else 1), expected)
        versions = [r.version for r in await collect(store.read_stream("s-1"))]
        assert versions == [0, 1, 2, 3, 4]

    async def test_read_stream_bounds(self, store: EventStore) -> None:
        await store.append("s-1", new_events(5))
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
        await store.append("s-1", new_events(2))
        result = await store.append("s-1", new_events(1), 1)
        assert result.version == 2
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new_events(1), 1)
        assert (info.value.stream, info.value.expected, info.value.actual) == ("s-1", 1, 2)
        assert str(info.value) == "s-1: expected version 1, actual 2"
        assert await store.stream_version("s-1") == 2

    async def test_expected_no_stream(self, store: EventStore) -> None:
        await store.append("s-1", new_events(1), NO_STREAM)
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new_events(1), NO_STREAM)
        assert info.value.actual == 0
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", new_events(1), None)
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-2", new_events(1), 0)
        assert info.value.actual is None

    async def test_expected_stream_exists(self, store: EventStore) -> None:
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new_events(1), STREAM_EXISTS)
        assert info.value.actual is None
        assert await nothing_stored(store, "s-1")
        await store.append("s-1", new_events(1))
        assert (await store.append("s-1", new_events(1), STREAM_EXISTS)).version == 1

    async def test_expected_any(self, store: EventStore) -> None:
        assert (await store.append("s-1", new_events(1), ANY)).version == 0
        assert (await store.append("s-1", new_events(1), ANY)).version == 1

    @pytest.mark.parametrize("bad", [True, False, -1, "1", 1.0, "any"])
    async def test_invalid_expected_version(self, store: EventStore, bad: Any) -> None:
        with pytest.raises(InvalidExpectedVersion) as info:
            await store.append("s-1", new_events(1), bad)
        assert info.value.stream == "s-1"
        assert isinstance(info.value, ValueError)
        assert await nothing_stored(store, "s-1")

    async def test_empty_append_checks_guard_and_writes_nothing(self, store: EventStore) -> None:
        empty = await store.append("s-1", [], NO_STREAM)
        assert (empty.version, empty.position, empty.positions) == (None, 0, ())
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", [], 0)
        written = await store.append("s-1", new_events(2))
        again = await store.append("s-1", [], 1)
        assert (again.version, again.position, again.positions) == (1, written.position, ())
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", [], NO_STREAM)
        assert await store.head_position() == written.position

    # -- guarantee 2: concurrency ---------------------------------------------------------------

    async def test_racing_appends_exactly_one_wins(self, store: EventStore) -> None:
        await store.append("race-1", new_events(1))

        async def attempt(i: int) -> int | str:
            try:
                result = await store.append("race-1", new_events(2, tag=str(i)), 0)
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
                await store.append(f"w-{w % 4}", new_events(2, tag=f"{w}-{i}"))

        await asyncio.gather(*(writer(w) for w in range(8)))
        everything = await collect(store.read_all())
        assert len(everything) == 8 * 10 * 2
        positions = [r.position for r in everything]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        for s in range(4):
            versions = [r.version for r in await collect(store.read_stream(f"w-{s}"))]
            assert versions == list(range(40))
