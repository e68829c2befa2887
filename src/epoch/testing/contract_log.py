"""The global log: ``read_all`` in position order and by category (guarantee 4's order), per-stream order
whatever the guard (guarantee 10), and one delivery per event whatever the filter (guarantee 11).

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest

from epoch.errors import InvalidStreamName, StoreUnavailable, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, RecordedEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events
from epoch.testing._subscriptions import logged_warnings, quiet, take

__all__ = ["LogContract", "inversions"]


def inversions(events: Sequence[RecordedEvent]) -> list[tuple[str, int, int]]:
    """``(stream, previous version, version)`` wherever a stream's versions do not go up by one in ``events``."""
    last: dict[str, int] = {}
    found: list[tuple[str, int, int]] = []
    for event in events:
        before = last.get(event.stream, -1)
        if event.version != before + 1:
            found.append((event.stream, before, event.version))
        last[event.stream] = event.version
    return found


# -- guarantee 10: one writer per task, each with its own guard ---------------------------------------


async def _write_any(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        await store.append(stream, new_events(2, f"{w}-{i}"), ANY)


async def _write_exists(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        await store.append(stream, new_events(2, f"{w}-{i}"), STREAM_EXISTS)


async def _write_int(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        expected: int | None = await store.stream_version(stream)
        while True:
            try:
                await store.append(stream, new_events(2, f"{w}-{i}"), NO_STREAM if expected is None else expected)
                break
            except WrongExpectedVersion as exc:
                expected = exc.actual  # retry at the version the store reports, as a CommandHandler does


async def _write_no_stream(store: EventStore, stream: str, w: int, rounds: int) -> None:
    # Every writer races to create the stream (one wins), then carries on with ANY.
    with contextlib.suppress(WrongExpectedVersion):
        await store.append(stream, new_events(3, f"{w}-first"), NO_STREAM)
    await _write_any(store, stream, w, rounds)


_WRITERS: dict[str, Callable[[EventStore, str, int, int], Awaitable[None]]] = {
    "ANY": _write_any,
    "STREAM_EXISTS": _write_exists,
    "int": _write_int,
    "NO_STREAM": _write_no_stream,
}


class LogContract:
    """The global log's order and filters: guarantees 4 (order), 10 (per-stream order) and 11 (filters)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- read_all and categories ----------------------------------------------------------------

    async def test_read_all_in_position_order(self, store: EventStore) -> None:
        a = await store.append("users-1", new_events(2))
        b = await store.append("orders-1", new_events(1))
        c = await store.append("users-2", new_events(1))
        everything = await collect(store.read_all())
        assert [r.position for r in everything] == [*a.positions, *b.positions, *c.positions]
        assert [r.stream for r in everything] == ["users-1", "users-1", "orders-1", "users-2"]
        after = await collect(store.read_all(after=a.position))
        assert [r.position for r in after] == [*b.positions, *c.positions]
        assert [r.position for r in await collect(store.read_all(limit=2))] == list(a.positions)
        assert await collect(store.read_all(after=c.position)) == []
        assert await store.head_position() == c.position

    async def test_read_all_by_category(self, store: EventStore) -> None:
        await store.append("users-1", new_events(1))
        await store.append("orders-1", new_events(1))
        await store.append("users-2", new_events(1))
        await store.append("audit", new_events(1))
        users = await collect(store.read_all(categories="users"))
        assert [r.stream for r in users] == ["users-1", "users-2"]
        both = await collect(store.read_all(categories=["users", "audit"]))
        assert [r.stream for r in both] == ["users-1", "users-2", "audit"]
        assert [r.stream for r in await collect(store.read_all(categories=["users"], limit=1))] == ["users-1"]
        assert await collect(store.read_all(categories=["nothing"])) == []

    @pytest.mark.parametrize("count", [501, 1200])
    async def test_read_all_by_many_categories(self, store: EventStore, count: int) -> None:
        # More names than SQL databases take in one statement (SQLite: 500 arms of a compound SELECT).
        names = [f"c{i}" for i in range(count)]
        for round in range(3):  # interleaved: each page merges names from far apart in the list
            for i in (0, 199, 200, 201, 399, 400, 499, 500, count - 1):
                await store.append(f"c{i}-{round}", new_events(2, f"{i}.{round}"))
            await store.append(f"other-{round}", new_events(1))
        everything = await collect(store.read_all())
        wanted = [(e.stream, e.version) for e in everything if e.category in set(names)]
        assert len(wanted) == 54
        read = await collect(store.read_all(categories=[*reversed(names), "c0"]))
        assert [(e.stream, e.version) for e in read] == wanted
        after = everything[10].position
        limited = await collect(store.read_all(after=after, limit=7, categories=names))
        assert [(e.stream, e.version) for e in limited] == [
            (e.stream, e.version) for e in everything if e.position > after and e.category in set(names)
        ][:7]
        delivered = await take(store, len(wanted), categories=names)
        assert [(e.stream, e.version) for e in delivered] == wanted

    async def test_invalid_category_is_refused(self, store: EventStore) -> None:
        with pytest.raises(InvalidStreamName):
            await collect(store.read_all(categories="users-1"))
        with pytest.raises(InvalidStreamName):
            await collect(store.read_all(categories=[""]))

    # -- guarantee 10: per-stream order in the global log ---------------------------------------

    @pytest.mark.parametrize("guard", ["ANY", "STREAM_EXISTS", "int", "NO_STREAM", "mixed"])
    async def test_concurrent_appends_to_one_stream_keep_version_order(self, store: EventStore, guard: str) -> None:
        writers, rounds = 8, (6 if guard == "int" else 12)  # int guards conflict often: each round costs more
        stream = "hot-1"
        if guard in ("STREAM_EXISTS", "mixed"):
            await store.append(stream, new_events(1, "seed"), NO_STREAM)
        kinds = list(_WRITERS) if guard == "mixed" else [guard]
        await asyncio.gather(
            *(_WRITERS[kinds[w % len(kinds)]](store, stream, w, rounds) for w in range(writers)),
            store.append("cold-1", new_events(3, "cold"), ANY),  # another stream in between
        )
        version = await store.stream_version(stream)
        assert version is not None
        logged = await collect(store.read_all())
        assert inversions(logged) == []
        in_stream = [e for e in logged if e.stream == stream]
        assert [e.version for e in in_stream] == list(range(version + 1))
        positions = [e.position for e in logged]
        assert positions == sorted(positions)
        # A subscription delivers the same order (catch-up of what is already committed).
        delivered = await take(store, len(logged))
        assert [(e.stream, e.version, e.position) for e in delivered] == [
            (e.stream, e.version, e.position) for e in logged
        ]

    async def test_live_subscription_sees_each_stream_in_version_order(self, store: EventStore) -> None:
        writers, rounds = 8, 10
        await store.append("hot-1", new_events(1, "seed"))
        total = 1 + writers * rounds * 2 * 2
        live = asyncio.ensure_future(take(store, total))
        await asyncio.sleep(0.05)
        await asyncio.gather(
            *(_WRITERS[("ANY", "STREAM_EXISTS")[w % 2]](store, "hot-1", w, rounds) for w in range(writers)),
            *(_write_any(store, "hot-2", w, rounds) for w in range(writers)),
        )
        delivered = await live
        assert inversions(delivered) == []
        assert [e.position for e in delivered] == [e.position for e in await collect(store.read_all())]

    # -- guarantee 11: one delivery per event, whatever the filter ------------------------------

    async def _three_categories(self, store: EventStore) -> list[RecordedEvent]:
        await store.append("users-1", new_events(2, "u"))
        await store.append("orders-1", new_events(1, "o"))
        await store.append("audit", new_events(1, "a"))
        await store.append("users-2", new_events(1, "u"))
        return await collect(store.read_all())

    @pytest.mark.parametrize(
        "categories",
        [
            ["users", "users"],
            ("users", "orders", "users", "orders", "users"),
            ["users"] * 9,  # more names than the PostgreSQL store merges one by one
            ["users", "orders", "a", "b", "c", "d", "e", "f", "g", "users"],
            "users",
        ],
    )
    async def test_repeated_categories_deliver_each_event_once(self, store: EventStore, categories: Any) -> None:
        everything = await self._three_categories(store)
        names = {categories} if isinstance(categories, str) else set(categories)
        wanted = [(e.stream, e.version) for e in everything if e.stream.split("-")[0] in names]
        read = await collect(store.read_all(categories=categories))
        assert [(e.stream, e.version) for e in read] == wanted
        limited = await collect(store.read_all(categories=categories, limit=2))
        assert [(e.stream, e.version) for e in limited] == wanted[:2]
        delivered = await take(store, len(wanted), categories=categories)
        assert [(e.stream, e.version) for e in delivered] == wanted
        # ... and nothing more arrives (no second copy of any event).
        assert await quiet(store, 0.1, categories=categories, after=delivered[-1].position) == []

    @pytest.mark.parametrize("empty", [[], (), iter(()), set()])
    async def test_empty_categories_deliver_nothing(self, store: EventStore, empty: Any) -> None:
        await self._three_categories(store)
        assert await collect(store.read_all(categories=empty)) == []

    async def test_empty_categories_subscription_waits_for_nothing(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        await self._three_categories(store)
        subscription = store.subscribe(categories=[])
        seen: list[RecordedEvent] = []

        async def consume() -> None:
            async for event in subscription:
                seen.append(event)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        await store.append("users-3", new_events(2, "live"))
        done, _ = await asyncio.wait({task}, timeout=0.2)
        assert not done, "subscribe(categories=[]) must wait, not end or raise"
        assert seen == []
        assert logged_warnings(caplog) == []  # it waited: no error retried in a loop
        # The store still serves everything else.
        assert len(await collect(store.read_all())) == 7
        # It ends when the store closes, as every subscription does.
        await store.close()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "subscribe(categories=[]) must end when the store closes"
        with pytest.raises(StoreUnavailable):
            task.result()
        await subscription.aclose()  # type: ignore[attr-defined]
