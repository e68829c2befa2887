"""Dynamic consistency boundaries (DESIGN §8), part two: ``append_with_condition``, ``append_many`` and
the racing claimants of one tag. A store that does not declare an operation in ``boundary_operations``
must raise ``NotSupported`` for it (see ``contract_dcb``): there the tests marked ``requires`` assert that.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from msgspec.structs import replace

from epoch.errors import (
    AppendConditionFailed,
    DuplicateEventId,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidQuery,
    InvalidStreamName,
    WrongExpectedVersion,
)
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import ANY, NO_STREAM, NewEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events, nothing_stored
from epoch.testing.contract_dcb import requires, tagged
from epoch.testing.contract_numbers import HUGE_INTS

__all__ = ["ConditionsContract"]

ADA = Query([QueryItem(tags=("username:ada",))])


def claim(name: str = "ada", n: int = 0) -> list[NewEvent]:
    """A fresh ``UsernameClaimed`` event tagged ``username:{name}``."""
    return [tagged("UsernameClaimed", f"username:{name}", n=n)]


class ConditionsContract:
    """Check-and-append on a query's events since a position; several streams all or nothing; one claimant wins."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- append_with_condition ------------------------------------------------------------------

    @requires("append_with_condition")
    async def test_condition_after_none(self, store: EventStore) -> None:
        first = await store.append_with_condition("user-1", claim(), AppendCondition(ADA))
        assert (first.stream, first.version, first.positions) == ("user-1", 0, (first.position,))
        await store.append("user-3", claim("bob"))  # another tag: no conflict
        with pytest.raises(AppendConditionFailed) as info:
            await store.append_with_condition("user-2", claim(), AppendCondition(ADA))
        assert (info.value.stream, info.value.after, info.value.position) == ("user-2", None, first.position)
        assert str(info.value) == (
            f"user-2: append condition failed: an event matching its query was recorded at position "
            f"{first.position}, after the start"
        )
        assert await store.stream_version("user-2") is None
        assert [e.stream for e in await collect(store.read_all())] == ["user-1", "user-3"]

    @requires("append_with_condition")
    async def test_condition_after_a_position(self, store: EventStore) -> None:
        first = await store.append("user-1", claim())
        second = await store.append_with_condition("user-1", claim(n=1), AppendCondition(ADA, after=first.position))
        assert second.version == 1
        with pytest.raises(AppendConditionFailed) as info:
            await store.append_with_condition("user-2", claim(n=2), AppendCondition(ADA, after=first.position))
        assert (info.value.stream, info.value.after, info.value.position) == ("user-2", first.position, second.position)
        assert str(info.value) == (
            f"user-2: append condition failed: an event matching its query was recorded at position "
            f"{second.position}, after position {first.position}"
        )
        # The first matching event after ``after`` is named, not the last.
        third = await store.append("user-3", claim(n=3))
        with pytest.raises(AppendConditionFailed) as info:
            await store.append_with_condition("user-2", claim(n=4), AppendCondition(ADA, after=first.position))
        assert info.value.position == second.position < third.position
        assert await store.stream_version("user-2") is None
        ok = await store.append_with_condition("user-2", claim(n=5), AppendCondition(ADA, after=third.position))
        assert ok.version == 0

    @requires("append_with_condition")
    async def test_condition_queries_types_and_items(self, store: EventStore) -> None:
        await store.append("course-1", [tagged("CourseDefined", "course:1"), tagged("CourseRenamed", "course:1")])
        by_type = AppendCondition(Query([QueryItem(types=("CourseClosed",), tags=("course:1",))]))
        assert (await store.append_with_condition("course-1", [tagged("Subscribed", "course:1")], by_type)).version == 2
        either = Query([QueryItem(tags=("student:9",)), QueryItem(types=("Subscribed",))])
        with pytest.raises(AppendConditionFailed):
            await store.append_with_condition("course-1", [tagged("Subscribed", "course:1")], AppendCondition(either))
        assert (await store.append_with_condition("course-1", [], AppendCondition(Query([])))).version == 2
        with pytest.raises(AppendConditionFailed):
            await store.append_with_condition("course-1", [tagged("X")], AppendCondition(Query.all()))
        assert await store.stream_version("course-1") == 2

    @requires("append_with_condition")
    async def test_condition_with_expected_version(self, store: EventStore) -> None:
        await store.append("user-1", new_events(1))
        result = await store.append_with_condition("user-1", claim(), AppendCondition(ADA), 0)
        assert result.version == 1
        # The guard is checked first: a wrong expected version wins over a failing condition.
        with pytest.raises(WrongExpectedVersion) as wrong:
            await store.append_with_condition("user-1", claim(n=1), AppendCondition(ADA), 0)
        assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == ("user-1", 0, 1)
        with pytest.raises(WrongExpectedVersion) as missing:
            await store.append_with_condition("user-2", claim(n=2), AppendCondition(Query([])), 0)
        assert (missing.value.stream, missing.value.expected, missing.value.actual) == ("user-2", 0, None)
        with pytest.raises(AppendConditionFailed):
            await store.append_with_condition("user-1", claim(n=3), AppendCondition(ADA), 1)
        assert (
            await store.append_with_condition("user-2", claim("bob"), AppendCondition(ADA, result.position), NO_STREAM)
        ).version == 0
        assert await store.stream_version("user-1") == 1

    @requires("append_with_condition")
    async def test_condition_replay_returns_the_first_result(self, store: EventStore) -> None:
        events = claim()
        first = await store.append_with_condition("user-1", events, AppendCondition(ADA))
        # The events now match the query themselves: a replay is answered before the condition is read.
        again = await store.append_with_condition("user-1", events, AppendCondition(ADA))
        replayed = replace(first, replayed=True)
        assert not first.replayed and again == replayed
        assert await store.append_with_condition("user-1", events, AppendCondition(ADA), NO_STREAM) == replayed
        await store.append("user-1", new_events(1))
        assert await store.append_with_condition("user-1", events, AppendCondition(ADA)) == replayed
        with pytest.raises(DuplicateEventId) as info:
            await store.append_with_condition("user-2", events, AppendCondition(Query([])))
        assert (info.value.stream, info.value.existing_stream, info.value.existing_version) == ("user-2", "user-1", 0)
        assert await store.stream_version("user-1") == 1

    @requires("append_with_condition")
    async def test_condition_with_no_events(self, store: EventStore) -> None:
        empty = await store.append_with_condition("user-1", [], AppendCondition(ADA))
        assert (empty.stream, empty.version, empty.position, empty.positions) == ("user-1", None, 0, ())
        written = await store.append("user-1", claim())
        # No events: the guard and the condition are checked, nothing is written.
        with pytest.raises(AppendConditionFailed) as info:
            await store.append_with_condition("user-2", [], AppendCondition(ADA))
        assert info.value.position == written.position
        again = await store.append_with_condition("user-1", [], AppendCondition(ADA, written.position), 0)
        assert (again.version, again.position, again.positions) == (0, written.position, ())
        assert await store.head_position() == written.position

    @requires("append_with_condition")
    async def test_condition_huge_after(self, store: EventStore) -> None:
        written = await store.append("user-1", claim())
        for number in HUGE_INTS:
            if number < 0:
                with pytest.raises(InvalidQuery) as bad:
                    AppendCondition(ADA, after=number)
                assert str(bad.value) == f"after must be None or a position >= 0, not {number!r}"
                continue
            condition = AppendCondition(ADA, after=number)
            if written.position > number:  # positions are the store's own: the event is after ``number``
                with pytest.raises(AppendConditionFailed):
                    await store.append_with_condition("user-2", [], condition)
            else:
                assert (await store.append_with_condition("user-2", [], condition)).version is None
        assert await store.stream_version("user-2") is None

    @pytest.mark.parametrize("bad", [None, ADA, "username:ada", AppendCondition])
    async def test_condition_must_be_an_append_condition(self, store: EventStore, bad: Any) -> None:
        with pytest.raises(InvalidQuery) as info:
            await store.append_with_condition("user-1", claim(), bad)
        assert str(info.value) == f"condition must be an AppendCondition, not {type(bad).__name__}"
        assert await nothing_stored(store, "user-1")

    async def test_condition_checks_the_append_first(self, store: EventStore) -> None:
        with pytest.raises(InvalidStreamName):
            await store.append_with_condition("", claim(), AppendCondition(ADA))
        with pytest.raises(InvalidEvent) as info:
            await store.append_with_condition(
                "user-1", [*claim(), NewEvent("T", b"{}", tags=("",))], AppendCondition(ADA)
            )
        assert (info.value.stream, info.value.index) == ("user-1", 1)
        with pytest.raises(InvalidQuery):
            AppendCondition(Query([QueryItem(tags=(" bad",))]))
        with pytest.raises(InvalidQuery):
            AppendCondition("not a query")  # type: ignore[arg-type]
        assert await nothing_stored(store, "user-1")

    # -- append_many ----------------------------------------------------------------------------

    @requires("append_many")
    async def test_append_many_in_order(self, store: EventStore) -> None:
        await store.append("b-1", new_events(2))
        results = await store.append_many(
            [("a-1", new_events(2), NO_STREAM), ("b-1", new_events(1), 1), ("c-1", [], ANY)]
        )
        assert [(r.stream, r.version, len(r.positions)) for r in results] == [
            ("a-1", 1, 2),
            ("b-1", 2, 1),
            ("c-1", None, 0),
        ]
        positions = [p for r in results for p in r.positions]
        assert positions == sorted(positions) and len(set(positions)) == 3
        assert [(e.stream, e.version) for e in await collect(store.read_all())][2:] == [
            ("a-1", 0),
            ("a-1", 1),
            ("b-1", 2),
        ]
        assert await store.head_position() == results[1].position
        assert results[0].recorded_at is not None and results[1].recorded_at is not None

    @requires("append_many")
    async def test_append_many_all_or_nothing(self, store: EventStore) -> None:
        await store.append("b-1", new_events(2))
        head = await store.head_position()
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append_many(
                [("a-1", new_events(2), NO_STREAM), ("b-1", new_events(1), 0), ("c-1", new_events(1), ANY)]
            )
        assert (info.value.stream, info.value.expected, info.value.actual) == ("b-1", 0, 1)
        assert str(info.value) == "b-1: expected version 0, actual 1"
        assert await store.head_position() == head
        assert await store.stream_version("a-1") is None and await store.stream_version("c-1") is None

    @requires("append_many")
    async def test_append_many_duplicate_ids(self, store: EventStore) -> None:
        shared = new_events(1)[0]
        with pytest.raises(DuplicateEventId) as info:
            await store.append_many([("a-1", [shared], ANY), ("b-1", [*new_events(1), shared], ANY)])
        assert (info.value.stream, info.value.id, info.value.existing_stream) == ("b-1", shared.id, "a-1")
        assert str(info.value) == f"b-1: event id {shared.id} is given twice in one call (also for a-1)"
        assert await nothing_stored(store)
        stored = await store.append("z-1", [shared])
        with pytest.raises(DuplicateEventId) as info:
            await store.append_many([("a-1", new_events(1), ANY), ("b-1", [shared], ANY)])
        assert (info.value.stream, info.value.existing_stream, info.value.existing_version) == ("b-1", "z-1", 0)
        assert await store.head_position() == stored.position

    async def test_append_many_refuses_a_stream_twice(self, store: EventStore) -> None:
        with pytest.raises(InvalidEvent) as info:
            await store.append_many(
                [("a-1", new_events(1), ANY), ("b-1", new_events(1), ANY), ("a-1", new_events(1), 0)]
            )
        assert (
            str(info.value)
            == "a-1: invalid event at index 0: append_many names this stream twice: append its events in one entry"
        )
        assert await nothing_stored(store)

    @pytest.mark.parametrize(
        ("appends", "error"),
        [
            ("a-1", InvalidEvent),
            ((("a-1", [], ANY),), InvalidEvent),
            ([("a-1", [])], InvalidEvent),
            ([["a-1", [], ANY]], InvalidEvent),
            ([("a-1", [], ANY), ("", [], ANY)], InvalidStreamName),
            ([("a-1", new_events(1), ANY), ("b-1", "not events", ANY)], InvalidEvent),
            ([("a-1", new_events(1), ANY), ("b-1", [], -1)], InvalidExpectedVersion),
        ],
    )
    async def test_append_many_bad_input(self, store: EventStore, appends: Any, error: type[Exception]) -> None:
        with pytest.raises(error):
            await store.append_many(appends)
        assert await nothing_stored(store)

    @requires("append_many")
    async def test_append_many_empty_and_replayed(self, store: EventStore) -> None:
        assert await store.append_many([]) == []
        batch = [("a-1", new_events(2), NO_STREAM), ("b-1", new_events(1), NO_STREAM)]
        first = await store.append_many(batch)
        assert await store.append_many(batch) == [replace(result, replayed=True) for result in first]
        head = await store.head_position()
        assert await store.stream_version("a-1") == 1 and head == first[-1].position

    @requires("append_many", "append_with_condition")
    async def test_tagged_events_keep_every_guarantee(self, store: EventStore) -> None:
        results = await store.append_many(
            [("a-1", [tagged("T", "x"), tagged("T", "y")], ANY), ("b-1", [tagged("T", "x")], ANY)]
        )
        more = await store.append_with_condition("a-1", [tagged("T", "x", n=1)], AppendCondition(ADA))
        log = await collect(store.read_all())
        assert [(e.stream, e.version, e.tags) for e in log] == [
            ("a-1", 0, ("x",)),
            ("a-1", 1, ("y",)),
            ("b-1", 0, ("x",)),
            ("a-1", 2, ("x",)),
        ]
        assert [e.position for e in log] == [*results[0].positions, *results[1].positions, more.position]
        assert [e.version for e in await collect(store.read_stream("a-1"))] == [0, 1, 2]

    # -- concurrency ----------------------------------------------------------------------------

    @requires("append_with_condition")
    async def test_racing_claimants_exactly_one_wins(self, store: EventStore) -> None:
        async def attempt(i: int) -> str:
            try:
                await store.append_with_condition(f"user-{i}", claim(n=i), AppendCondition(ADA))
            except AppendConditionFailed:
                return "lost"
            return "won"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert sorted(outcomes) == ["lost"] * 15 + ["won"]
        claims = await collect(store.read_all())
        assert len(claims) == 1 and claims[0].stream == f"user-{outcomes.index('won')}"

    @requires("append_many")
    async def test_racing_append_many_exactly_one_wins(self, store: EventStore) -> None:
        await store.append("a-1", new_events(1))

        async def attempt(i: int) -> str:
            try:
                await store.append_many([(f"mine-{i}", new_events(1), NO_STREAM), ("a-1", new_events(1, str(i)), 0)])
            except WrongExpectedVersion as exc:
                assert (exc.stream, exc.actual) == ("a-1", 1)
                return "lost"
            return "won"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert sorted(outcomes) == ["lost"] * 15 + ["won"]
        winner = outcomes.index("won")
        assert [e.stream for e in await collect(store.read_all())] == ["a-1", f"mine-{winner}", "a-1"]
