"""Guarantees 10, 11 and 13 of DESIGN §3: the global log's per-stream order, category filters, numbers.

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest

from epoch.errors import EpochError, InvalidExpectedVersion, InvalidVersion, StoreUnavailable, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, NewEvent, RecordedEvent
from epoch.stores import EventStore

__all__ = ["HUGE_INTS", "LogContract", "inversions"]

HUGE_INTS = (2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**100, -(2**63) - 1, -(2**100))
"""Numbers around and beyond 64 bits (the values of ``tests.hostile.huge_ints``)."""


def _new(n: int, tag: str) -> list[NewEvent]:
    return [NewEvent("Happened", f'{{"tag": "{tag}", "i": {i}}}'.encode()) for i in range(n)]


async def _collect(iterator: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [event async for event in iterator]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What epoch logged at WARNING or above (a store retrying in a loop logs each attempt)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("epoch")]


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


async def _take(store: EventStore, count: int, **kwargs: Any) -> list[RecordedEvent]:
    """The first ``count`` events ``subscribe(**kwargs)`` delivers."""
    subscription = store.subscribe(**kwargs)
    seen: list[RecordedEvent] = []

    async def consume() -> None:
        async for event in subscription:
            seen.append(event)
            if len(seen) == count:
                return

    try:
        await asyncio.wait_for(consume(), 30.0)
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]
    return seen


async def _quiet(store: EventStore, seconds: float, **kwargs: Any) -> list[RecordedEvent]:
    """What ``subscribe(**kwargs)`` delivers within ``seconds`` (errors propagate)."""
    subscription = store.subscribe(**kwargs)
    seen: list[RecordedEvent] = []

    async def consume() -> None:
        async for event in subscription:
            seen.append(event)

    task = asyncio.ensure_future(consume())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if done:
            task.result()  # an error (or an end) is a failure: re-raise it
            raise AssertionError("the subscription ended on its own")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await subscription.aclose()  # type: ignore[attr-defined]
    return seen


# -- guarantee 10: one writer per task, each with its own guard ---------------------------------------


async def _write_any(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        await store.append(stream, _new(2, f"{w}-{i}"), ANY)


async def _write_exists(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        await store.append(stream, _new(2, f"{w}-{i}"), STREAM_EXISTS)


async def _write_int(store: EventStore, stream: str, w: int, rounds: int) -> None:
    for i in range(rounds):
        expected: int | None = await store.stream_version(stream)
        while True:
            try:
                await store.append(stream, _new(2, f"{w}-{i}"), NO_STREAM if expected is None else expected)
                break
            except WrongExpectedVersion as exc:
                expected = exc.actual  # retry at the version the store reports, as a CommandHandler does


async def _write_no_stream(store: EventStore, stream: str, w: int, rounds: int) -> None:
    # Every writer races to create the stream (one wins), then carries on with ANY.
    with contextlib.suppress(WrongExpectedVersion):
        await store.append(stream, _new(3, f"{w}-first"), NO_STREAM)
    await _write_any(store, stream, w, rounds)


_WRITERS: dict[str, Callable[[EventStore, str, int, int], Awaitable[None]]] = {
    "ANY": _write_any,
    "STREAM_EXISTS": _write_exists,
    "int": _write_int,
    "NO_STREAM": _write_no_stream,
}


class LogContract:
    """Guarantees 10 (per-stream order), 11 (category filters) and 13 (out-of-range numbers)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- guarantee 10: per-stream order in the global log ---------------------------------------

    @pytest.mark.parametrize("guard", ["ANY", "STREAM_EXISTS", "int", "NO_STREAM", "mixed"])
    async def test_concurrent_appends_to_one_stream_keep_version_order(self, store: EventStore, guard: str) -> None:
        writers, rounds = 8, (6 if guard == "int" else 12)  # int guards conflict often: each round costs more
        stream = "hot-1"
        if guard in ("STREAM_EXISTS", "mixed"):
            await store.append(stream, _new(1, "seed"), NO_STREAM)
        kinds = list(_WRITERS) if guard == "mixed" else [guard]
        await asyncio.gather(
            *(_WRITERS[kinds[w % len(kinds)]](store, stream, w, rounds) for w in range(writers)),
            store.append("cold-1", _new(3, "cold"), ANY),  # another stream in between
        )
        version = await store.stream_version(stream)
        assert version is not None
        logged = await _collect(store.read_all())
        assert inversions(logged) == []
        in_stream = [e for e in logged if e.stream == stream]
        assert [e.version for e in in_stream] == list(range(version + 1))
        positions = [e.position for e in logged]
        assert positions == sorted(positions)
        # A subscription delivers the same order (catch-up of what is already committed).
        delivered = await _take(store, len(logged))
        assert [(e.stream, e.version, e.position) for e in delivered] == [
            (e.stream, e.version, e.position) for e in logged
        ]

    async def test_live_subscription_sees_each_stream_in_version_order(self, store: EventStore) -> None:
        writers, rounds = 8, 10
        await store.append("hot-1", _new(1, "seed"))
        total = 1 + writers * rounds * 2 * 2
        live = asyncio.ensure_future(_take(store, total))
        await asyncio.sleep(0.05)
        await asyncio.gather(
            *(_WRITERS[("ANY", "STREAM_EXISTS")[w % 2]](store, "hot-1", w, rounds) for w in range(writers)),
            *(_write_any(store, "hot-2", w, rounds) for w in range(writers)),
        )
        delivered = await live
        assert inversions(delivered) == []
        assert [e.position for e in delivered] == [e.position for e in await _collect(store.read_all())]

    # -- guarantee 11: one delivery per event, whatever the filter ------------------------------

    async def _three_categories(self, store: EventStore) -> list[RecordedEvent]:
        await store.append("users-1", _new(2, "u"))
        await store.append("orders-1", _new(1, "o"))
        await store.append("audit", _new(1, "a"))
        await store.append("users-2", _new(1, "u"))
        return await _collect(store.read_all())

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
        read = await _collect(store.read_all(categories=categories))
        assert [(e.stream, e.version) for e in read] == wanted
        limited = await _collect(store.read_all(categories=categories, limit=2))
        assert [(e.stream, e.version) for e in limited] == wanted[:2]
        delivered = await _take(store, len(wanted), categories=categories)
        assert [(e.stream, e.version) for e in delivered] == wanted
        # ... and nothing more arrives (no second copy of any event).
        assert await _quiet(store, 0.1, categories=categories, after=delivered[-1].position) == []

    @pytest.mark.parametrize("empty", [[], (), iter(()), set()])
    async def test_empty_categories_deliver_nothing(self, store: EventStore, empty: Any) -> None:
        await self._three_categories(store)
        assert await _collect(store.read_all(categories=empty)) == []

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
        await store.append("users-3", _new(2, "live"))
        done, _ = await asyncio.wait({task}, timeout=0.2)
        assert not done, "subscribe(categories=[]) must wait, not end or raise"
        assert seen == []
        assert _warnings(caplog) == []  # it waited: no error retried in a loop
        # The store still serves everything else.
        assert len(await _collect(store.read_all())) == 7
        # It ends when the store closes, as every subscription does.
        await store.close()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "subscribe(categories=[]) must end when the store closes"
        with pytest.raises(StoreUnavailable):
            task.result()
        await subscription.aclose()  # type: ignore[attr-defined]

    # -- guarantee 13: out-of-range numbers are bad input ---------------------------------------

    # Each test runs every value of HUGE_INTS on one store (the messages name the value that failed).

    async def test_huge_expected_version_on_append(self, store: EventStore) -> None:
        await store.append("s-1", _new(2, "x"))
        head = await store.head_position()
        for number in HUGE_INTS:
            for batch in (_new(1, "y"), []):
                if number < 0:
                    with pytest.raises(InvalidExpectedVersion) as invalid:
                        await store.append("s-1", batch, number)
                    assert str(invalid.value) == (
                        f"s-1: invalid expected version {number!r} "
                        "(use ANY, NO_STREAM, STREAM_EXISTS, None or an int >= 0)"
                    )
                    assert (invalid.value.stream, invalid.value.value) == ("s-1", number)
                else:
                    with pytest.raises(WrongExpectedVersion) as wrong:
                        await store.append("s-1", batch, number)
                    assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == ("s-1", number, 1)
                    assert str(wrong.value) == f"s-1: expected version {number}, actual 1"
                with pytest.raises(WrongExpectedVersion if number >= 0 else InvalidExpectedVersion):
                    await store.append("new-1", batch, number)
        assert await store.stream_version("s-1") == 1
        assert await store.stream_version("new-1") is None
        assert await store.head_position() == head

    async def test_huge_expected_version_on_delete(self, store: EventStore) -> None:
        await store.append("s-1", _new(2, "x"))
        for number in HUGE_INTS:
            if number < 0:
                with pytest.raises(InvalidExpectedVersion) as invalid:
                    await store.delete_stream("s-1", number)
                assert (invalid.value.stream, invalid.value.value) == ("s-1", number)
            else:
                with pytest.raises(WrongExpectedVersion) as wrong:
                    await store.delete_stream("s-1", number)
                assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == ("s-1", number, 1)
                assert str(wrong.value) == f"s-1: expected version {number}, actual 1"
                with pytest.raises(WrongExpectedVersion) as missing:
                    await store.delete_stream("new-1", number)
                assert (missing.value.stream, missing.value.expected, missing.value.actual) == ("new-1", number, None)
        assert await store.stream_version("s-1") == 1
        assert len(await _collect(store.read_stream("s-1"))) == 2

    async def test_huge_read_stream_bounds(self, store: EventStore) -> None:
        await store.append("s-1", _new(3, "x"))
        for number in HUGE_INTS:
            if number < 0:
                cases: list[dict[str, Any]] = [
                    {"from_version": number},
                    {"limit": number},
                    {"from_version": number, "backwards": True},
                ]
                for kwargs in cases:
                    with pytest.raises(InvalidVersion) as info:
                        await _collect(store.read_stream("s-1", **kwargs))
                    assert (info.value.stream, info.value.actual) == ("s-1", None), number
                continue
            # Past the end forwards: an empty read. Backwards from beyond the end: from the last event.
            assert await _collect(store.read_stream("s-1", from_version=number)) == [], number
            assert await _collect(store.read_stream("s-1", from_version=number, limit=number)) == [], number
            backwards = await _collect(store.read_stream("s-1", from_version=number, backwards=True))
            assert [e.version for e in backwards] == [2, 1, 0], number
            assert [e.version for e in await _collect(store.read_stream("s-1", limit=number))] == [0, 1, 2], number
            limited = await _collect(store.read_stream("s-1", backwards=True, limit=number))
            assert [e.version for e in limited] == [2, 1, 0], number
            assert await _collect(store.read_stream("nobody-1", from_version=number, limit=number)) == [], number

    async def test_huge_read_all_bounds(self, store: EventStore) -> None:
        await store.append("users-1", _new(3, "x"))
        everything = await _collect(store.read_all())
        for number in HUGE_INTS:
            if number < 0:
                for kwargs in ({"after": number}, {"limit": number}, {"after": number, "categories": "users"}):
                    with pytest.raises(InvalidVersion) as info:
                        await _collect(store.read_all(**kwargs))
                    assert info.value.stream == "$all", number
                continue
            # Positions are the store's own (not dense on every store): what is past ``after`` is read.
            past = [e.position for e in everything if e.position > number]
            assert [e.position for e in await _collect(store.read_all(after=number))] == past, number
            assert [e.position for e in await _collect(store.read_all(after=number, limit=number))] == past, number
            by_category = await _collect(store.read_all(after=number, categories="users"))
            assert [e.position for e in by_category] == past, number
            every = [e.position for e in everything]
            assert [e.position for e in await _collect(store.read_all(limit=number))] == every, number
            assert [e.position for e in await _collect(store.read_all(limit=number, categories=["users"]))] == every

    async def test_huge_subscribe_after(self, store: EventStore, caplog: pytest.LogCaptureFixture) -> None:
        await store.append("users-1", _new(2, "x"))
        everything = await _collect(store.read_all())
        for number in HUGE_INTS:
            if number < 0:
                with pytest.raises(InvalidVersion) as info:
                    await _quiet(store, 5, after=number)
                assert info.value.stream == "$all", number
                continue
            past = [e.position for e in everything if e.position > number]
            if past:  # the store's positions are beyond ``number``: it is a position like any other
                delivered = await _take(store, len(past), after=number)
                assert [e.position for e in delivered] == past, number
                continue
            # Past the end of the log: nothing to deliver, not an error and not a retry loop.
            for categories in (None, "users"):
                assert await _quiet(store, 0.1, after=number, categories=categories) == [], number
        assert _warnings(caplog) == []  # it waited: no error retried in a loop
        assert (await store.append("users-1", _new(1, "y"))).version == 2  # the store works on

    async def test_huge_numbers_are_never_a_driver_error(self, store: EventStore) -> None:
        """Every numeric parameter of every entry, each huge value: an EpochError or a result, nothing stored."""
        await store.append("s-1", _new(1, "x"))
        head = await store.head_position()
        calls: list[Callable[[int], Awaitable[Any]]] = [
            lambda n: store.append("s-1", _new(1, "y"), n),
            lambda n: store.delete_stream("s-1", n),
            lambda n: _collect(store.read_stream("s-1", from_version=n)),
            lambda n: _collect(store.read_stream("s-1", from_version=n, backwards=True)),
            lambda n: _collect(store.read_stream("s-1", limit=n)),
            lambda n: _collect(store.read_all(after=n)),
            lambda n: _collect(store.read_all(limit=n)),
        ]
        for number in HUGE_INTS:
            for call in calls:
                with contextlib.suppress(EpochError):
                    await call(number)
        assert await store.head_position() == head
        assert await store.stream_version("s-1") == 0
