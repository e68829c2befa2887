"""The contract's stream limits and scavenge: DESIGN §8 "Stream lifecycle".

A store whose ``scavenge()`` cannot count what it erased (KurrentDB's server scavenges on its own and
reports no count) says so with ``scavenge_counts = False``: it then returns 0.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import ClassVar

import pytest

from epoch.errors import InvalidStreamName, InvalidVersion
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events

__all__ = ["LimitsContract"]


def _erased(store: EventStore, count: int) -> int:
    """What ``scavenge()`` returns after erasing ``count`` events on this store."""
    return count if getattr(store, "scavenge_counts", True) else 0


class LimitsContract:
    """Mixed into :class:`~epoch.testing.contract.EventStoreContract`; uses its ``store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    async def test_max_count_then_scavenge(self, store: EventStore) -> None:
        first = await store.append("l-1", new_events(5))
        other = await store.append("l-2", new_events(2))
        await store.set_stream_limits("l-1", max_count=2)
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [3, 4]
        assert [r.version for r in await collect(store.read_stream("l-1", from_version=0))] == [3, 4]
        assert [r.version for r in await collect(store.read_stream("l-1", backwards=True))] == [4, 3]
        assert await store.stream_version("l-1") == 4
        assert len(await collect(store.read_all())) == 7  # until a scavenge
        assert await store.scavenge() == _erased(store, 3)
        assert [r.position for r in await collect(store.read_all())] == [*first.positions[3:], *other.positions]
        assert await store.scavenge() == 0
        assert (await store.append("l-1", new_events(1), 4)).version == 5
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [4, 5]
        assert [r.version for r in await collect(store.read_stream("l-2"))] == [0, 1]

    async def test_scavenge_keeps_soft_deleted_events_the_limits_do_not_exclude(self, store: EventStore) -> None:
        """A soft delete erases nothing, and limits that exclude none of the stream's events give a scavenge
        nothing to erase: ``read_all`` keeps all five (the memory store erased them)."""
        written = await store.append("l-1", new_events(5))
        await store.set_stream_limits("l-1", max_count=10)
        await store.delete_stream("l-1")
        assert await store.scavenge() == 0
        if getattr(store, "scavenge_counts", True):  # KurrentDB's server decides what its scavenge erases
            assert [r.position for r in await collect(store.read_all())] == list(written.positions)
        assert (await store.append("l-1", new_events(1))).version == 5  # the versions go on

    async def test_scavenge_one_stream(self, store: EventStore) -> None:
        await store.append("l-1", new_events(3))
        await store.append("l-2", new_events(3))
        await store.set_stream_limits("l-1", max_count=1)
        await store.set_stream_limits("l-2", max_count=1)
        assert await store.scavenge("l-1") == _erased(store, 2)
        if getattr(store, "scavenge_counts", True):  # KurrentDB's server scavenges every stream at once
            assert [(r.stream, r.version) for r in await collect(store.read_all())] == [
                ("l-1", 2),
                ("l-2", 0),
                ("l-2", 1),
                ("l-2", 2),
            ]
        assert await store.scavenge("l-3") == 0  # unwritten

    async def test_max_age(self, store: EventStore) -> None:
        await store.append("l-1", new_events(2))
        await store.set_stream_limits("l-1", max_age=timedelta(seconds=1))
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [0, 1]
        await asyncio.sleep(1.3)
        await store.append("l-1", new_events(1))
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [2]
        assert [r.version for r in await collect(store.read_stream("l-1", backwards=True))] == [2]
        assert len(await collect(store.read_all())) == 3
        assert await store.scavenge() == _erased(store, 2)
        assert [r.version for r in await collect(store.read_all())] == [2]

    async def test_removing_limits_shows_what_was_not_scavenged(self, store: EventStore) -> None:
        await store.append("l-1", new_events(4))
        await store.set_stream_limits("l-1", max_count=1)
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [3]
        await store.set_stream_limits("l-1")
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [0, 1, 2, 3]
        assert await store.scavenge() == 0

    async def test_limits_on_an_unwritten_stream(self, store: EventStore) -> None:
        await store.set_stream_limits("l-1", max_count=2)
        assert await store.stream_version("l-1") is None
        await store.append("l-1", new_events(3))
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [1, 2]

    async def test_limits_refuse_bad_values(self, store: EventStore) -> None:
        await store.append("l-1", new_events(3))
        for count in (0, -1, True, "2", 1.5):
            with pytest.raises(InvalidVersion) as info:
                await store.set_stream_limits("l-1", max_count=count)  # type: ignore[arg-type]
            assert str(info.value) == f"l-1: invalid version {f'max_count={count!r}'!r}"
        for age in (timedelta(0), timedelta(seconds=-1), 5, timedelta(days=365 * 1001)):
            with pytest.raises(InvalidVersion) as info:
                await store.set_stream_limits("l-1", max_age=age)  # type: ignore[arg-type]
            assert str(info.value) == f"l-1: invalid version {f'max_age={age!r}'!r}"
        with pytest.raises(InvalidStreamName):
            await store.set_stream_limits("", max_count=1)
        with pytest.raises(InvalidStreamName):
            await store.scavenge("bad\x00name")
        assert [r.version for r in await collect(store.read_stream("l-1"))] == [0, 1, 2]
        assert await store.scavenge() == 0
        assert len(await collect(store.read_all())) == 3
