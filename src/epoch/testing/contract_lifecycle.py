"""The contract's soft delete, subscriptions and a closed store (guarantees 3, 4 and 9's live half)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from epoch.errors import StoreUnavailable, WrongExpectedVersion
from epoch.records import NO_STREAM, STREAM_EXISTS, RecordedEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events

__all__ = ["LifecycleContract"]


class LifecycleContract:
    """Mixed into :class:`~epoch.testing.contract.EventStoreContract`; uses its ``store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- soft delete ----------------------------------------------------------------------------

    async def test_soft_delete(self, store: EventStore) -> None:
        first = await store.append("s-1", new_events(3))
        await store.delete_stream("s-1", 2)
        assert await store.stream_version("s-1") is None
        assert await collect(store.read_stream("s-1")) == []
        assert await collect(store.read_stream("s-1", backwards=True)) == []
        assert [r.position for r in await collect(store.read_all())] == list(first.positions)
        again = await store.append("s-1", new_events(2), NO_STREAM)
        assert again.version == 4
        assert [r.version for r in await collect(store.read_stream("s-1"))] == [3, 4]
        assert [r.version for r in await collect(store.read_stream("s-1", from_version=0))] == [3, 4]
        assert [r.version for r in await collect(store.read_stream("s-1", backwards=True))] == [4, 3]
        assert len(await collect(store.read_all())) == 5
        assert await store.stream_version("s-1") == 4

    async def test_delete_checks_expected_version(self, store: EventStore) -> None:
        await store.append("s-1", new_events(2))
        with pytest.raises(WrongExpectedVersion) as info:
            await store.delete_stream("s-1", 0)
        assert info.value.actual == 1
        assert await store.stream_version("s-1") == 1
        await store.delete_stream("s-1")
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream("s-1", STREAM_EXISTS)

    async def test_deleted_stream_rejects_stale_version(self, store: EventStore) -> None:
        await store.append("s-1", new_events(2))
        await store.delete_stream("s-1")
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new_events(1), 1)
        assert info.value.actual is None

    # -- subscribe ------------------------------------------------------------------------------

    async def test_subscribe_catches_up_then_goes_live(self, store: EventStore) -> None:
        first = await store.append("s-1", new_events(3))
        subscription = store.subscribe()
        seen: list[RecordedEvent] = []

        async def consume() -> None:
            async for event in subscription:
                seen.append(event)
                if len(seen) == 6:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        second = await store.append("s-2", new_events(2))
        third = await store.append("s-1", new_events(1))
        await asyncio.wait_for(task, 10)
        await subscription.aclose()  # type: ignore[attr-defined]
        assert [r.position for r in seen] == [*first.positions, *second.positions, *third.positions]

    async def test_subscribe_after_and_categories(self, store: EventStore) -> None:
        a = await store.append("users-1", new_events(2))
        await store.append("orders-1", new_events(1))
        subscription = store.subscribe(after=a.positions[0], categories=["users"])
        live = asyncio.ensure_future(store.append("users-2", new_events(1)))
        seen = []
        async for event in subscription:
            seen.append(event)
            if len(seen) == 2:
                break
        await subscription.aclose()  # type: ignore[attr-defined]
        await live
        assert [(r.stream, r.version) for r in seen] == [("users-1", 1), ("users-2", 0)]

    async def test_subscribe_with_concurrent_writers_delivers_each_once(self, store: EventStore) -> None:
        total = 8 * 10 * 2

        async def writer(w: int) -> None:
            for i in range(10):
                await store.append(f"w-{w}", new_events(2, tag=f"{w}-{i}"))

        seen: list[RecordedEvent] = []

        async def consume() -> None:
            subscription = store.subscribe()
            try:
                async for event in subscription:
                    seen.append(event)
                    if len(seen) == total:
                        return
            finally:
                await subscription.aclose()  # type: ignore[attr-defined]

        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(writer(w) for w in range(8)))
        await asyncio.wait_for(consumer, 20)
        positions = [r.position for r in seen]
        assert positions == sorted(positions) and len(set(positions)) == total
        assert positions == [r.position for r in await collect(store.read_all())]

    # -- lifecycle ------------------------------------------------------------------------------

    async def test_closed_store_is_unavailable(self, store: EventStore) -> None:
        await store.append("s-1", new_events(1))
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.append("s-1", new_events(1))
        with pytest.raises(StoreUnavailable):
            await collect(store.read_stream("s-1"))
        await store.close()  # idempotent
