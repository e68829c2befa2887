"""Guarantee 13 of DESIGN §3: out-of-range numbers are bad input, with the same clear error on every store.

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

from epoch.errors import EpochError, InvalidExpectedVersion, InvalidVersion, WrongExpectedVersion
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events
from epoch.testing._subscriptions import logged_warnings, quiet, take

__all__ = ["HUGE_INTS", "NumbersContract"]

HUGE_INTS = (2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**100, -(2**63) - 1, -(2**100))
"""Numbers around and beyond 64 bits (the values of ``tests.hostile.huge_ints``)."""


class NumbersContract:
    """Every entry given versions and positions around and beyond 64 bits."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- guarantee 13: out-of-range numbers are bad input ---------------------------------------

    # Each test runs every value of HUGE_INTS on one store (the messages name the value that failed).

    async def test_huge_expected_version_on_append(self, store: EventStore) -> None:
        await store.append("s-1", new_events(2, "x"))
        head = await store.head_position()
        for number in HUGE_INTS:
            for batch in (new_events(1, "y"), []):
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
        await store.append("s-1", new_events(2, "x"))
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
        assert len(await collect(store.read_stream("s-1"))) == 2

    async def test_huge_read_stream_bounds(self, store: EventStore) -> None:
        await store.append("s-1", new_events(3, "x"))
        for number in HUGE_INTS:
            if number < 0:
                cases: list[dict[str, Any]] = [
                    {"from_version": number},
                    {"limit": number},
                    {"from_version": number, "backwards": True},
                ]
                for kwargs in cases:
                    with pytest.raises(InvalidVersion) as info:
                        await collect(store.read_stream("s-1", **kwargs))
                    assert (info.value.stream, info.value.actual) == ("s-1", None), number
                continue
            # Past the end forwards: an empty read. Backwards from beyond the end: from the last event.
            assert await collect(store.read_stream("s-1", from_version=number)) == [], number
            assert await collect(store.read_stream("s-1", from_version=number, limit=number)) == [], number
            backwards = await collect(store.read_stream("s-1", from_version=number, backwards=True))
            assert [e.version for e in backwards] == [2, 1, 0], number
            assert [e.version for e in await collect(store.read_stream("s-1", limit=number))] == [0, 1, 2], number
            limited = await collect(store.read_stream("s-1", backwards=True, limit=number))
            assert [e.version for e in limited] == [2, 1, 0], number
            assert await collect(store.read_stream("nobody-1", from_version=number, limit=number)) == [], number

    async def test_huge_read_all_bounds(self, store: EventStore) -> None:
        await store.append("users-1", new_events(3, "x"))
        everything = await collect(store.read_all())
        for number in HUGE_INTS:
            if number < 0:
                for kwargs in ({"after": number}, {"limit": number}, {"after": number, "categories": "users"}):
                    with pytest.raises(InvalidVersion) as info:
                        await collect(store.read_all(**kwargs))
                    assert info.value.stream == "$all", number
                continue
            # Positions are the store's own (not dense on every store): what is past ``after`` is read.
            past = [e.position for e in everything if e.position > number]
            assert [e.position for e in await collect(store.read_all(after=number))] == past, number
            assert [e.position for e in await collect(store.read_all(after=number, limit=number))] == past, number
            by_category = await collect(store.read_all(after=number, categories="users"))
            assert [e.position for e in by_category] == past, number
            every = [e.position for e in everything]
            assert [e.position for e in await collect(store.read_all(limit=number))] == every, number
            assert [e.position for e in await collect(store.read_all(limit=number, categories=["users"]))] == every

    async def test_huge_subscribe_after(self, store: EventStore, caplog: pytest.LogCaptureFixture) -> None:
        await store.append("users-1", new_events(2, "x"))
        everything = await collect(store.read_all())
        for number in HUGE_INTS:
            if number < 0:
                with pytest.raises(InvalidVersion) as info:
                    await quiet(store, 5, after=number)
                assert info.value.stream == "$all", number
                continue
            past = [e.position for e in everything if e.position > number]
            if past:  # the store's positions are beyond ``number``: it is a position like any other
                delivered = await take(store, len(past), after=number)
                assert [e.position for e in delivered] == past, number
                continue
            # Past the end of the log: nothing to deliver, not an error and not a retry loop.
            for categories in (None, "users"):
                assert await quiet(store, 0.1, after=number, categories=categories) == [], number
        assert logged_warnings(caplog) == []  # it waited: no error retried in a loop
        assert (await store.append("users-1", new_events(1, "y"))).version == 2  # the store works on

    async def test_huge_numbers_are_never_a_driver_error(self, store: EventStore) -> None:
        """Every numeric parameter of every entry, each huge value: an EpochError or a result, nothing stored."""
        await store.append("s-1", new_events(1, "x"))
        head = await store.head_position()
        calls: list[Callable[[int], Awaitable[Any]]] = [
            lambda n: store.append("s-1", new_events(1, "y"), n),
            lambda n: store.delete_stream("s-1", n),
            lambda n: collect(store.read_stream("s-1", from_version=n)),
            lambda n: collect(store.read_stream("s-1", from_version=n, backwards=True)),
            lambda n: collect(store.read_stream("s-1", limit=n)),
            lambda n: collect(store.read_all(after=n)),
            lambda n: collect(store.read_all(limit=n)),
        ]
        for number in HUGE_INTS:
            for call in calls:
                with contextlib.suppress(EpochError):
                    await call(number)
        assert await store.head_position() == head
        assert await store.stream_version("s-1") == 0
