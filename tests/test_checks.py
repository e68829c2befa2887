"""The shared store checks: ``check_read`` (the prologue of every read), ``runs_of`` (imports) and the one
``AppendResult`` builder, ``AppendResult.of``. Every store reaches these; the contract suite checks the
stores end to end, these pin the exact values and messages of the checks themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from epoch.errors import EpochError, InvalidEvent, InvalidStreamName, InvalidVersion
from epoch.records import AppendResult, NewEvent, RecordedEvent
from epoch.stores import EventStore
from epoch.stores._checks import GLOBAL_LOG, Read, check_read, runs_of

WHEN = datetime(2026, 5, 17, 12, 30, 15, tzinfo=UTC)
LATER = datetime(2026, 5, 17, 12, 30, 16, tzinfo=UTC)


def recorded(stream: str, version: int, position: int, at: datetime = WHEN) -> RecordedEvent:
    return RecordedEvent(stream, version, position, UUID(int=position + 1), "Happened", b"{}", b"", at)


def refusal(kind: type[EpochError], **kwargs: Any) -> str:
    """The whole message ``check_read`` raises for ``kwargs``, checking the error's class on the way."""
    with pytest.raises(kind) as info:
        check_read(**kwargs)
    return str(info.value)


# -- stream reads ----------------------------------------------------------------------------------


def test_a_stream_read_is_accepted_as_given() -> None:
    assert check_read("s-1") == Read("s-1", None, None, False, None)
    assert check_read("s-1", 3, 10, backwards=True) == Read("s-1", 3, 10, True, None)
    assert check_read("s-1", 0, 0) == Read("s-1", 0, 0, False, None)


def test_a_stream_named_like_the_global_log_is_a_stream() -> None:
    # The global read is a sentinel, not a string: a stream called "$all" is read like any other.
    assert check_read("$all") == Read("$all", None, None, False, None)
    assert repr(GLOBAL_LOG) == "GLOBAL_LOG"


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (None, "invalid stream name None: must be a str, not NoneType"),
        (42, "invalid stream name 42: must be a str, not int"),
        (b"s-1", "invalid stream name b's-1': must be a str, not bytes"),
        ("", "invalid stream name '': must have 1 to 512 characters, not 0"),
        (" s-1", "invalid stream name ' s-1': has leading or trailing whitespace"),
        ("s\x00-1", "invalid stream name 's\\x00-1': contains a control character"),
    ],
)
def test_a_bad_stream_name_is_refused(stream: Any, message: str) -> None:
    assert refusal(InvalidStreamName, stream=stream) == message


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (-1, "s-1: invalid version -1"),
        (-(2**100), f"s-1: invalid version {-(2**100)}"),
        (True, "s-1: invalid version True"),
        (False, "s-1: invalid version False"),
        (1.0, "s-1: invalid version 1.0"),
        ("3", "s-1: invalid version '3'"),
    ],
)
def test_a_bad_from_version_is_refused(start: Any, message: str) -> None:
    assert refusal(InvalidVersion, stream="s-1", start=start) == message


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (-1, "s-1: invalid version 'limit=-1'"),
        (True, "s-1: invalid version 'limit=True'"),
        (False, "s-1: invalid version 'limit=False'"),
        (2.5, "s-1: invalid version 'limit=2.5'"),
    ],
)
def test_a_bad_limit_is_refused(limit: Any, message: str) -> None:
    assert refusal(InvalidVersion, stream="s-1", limit=limit) == message


@pytest.mark.parametrize(
    ("backwards", "message"),
    [
        (1, "s-1: invalid version 'backwards=1'"),
        (0, "s-1: invalid version 'backwards=0'"),
        ("false", "s-1: invalid version \"backwards='false'\""),
        (None, "s-1: invalid version 'backwards=None'"),
    ],
)
def test_backwards_must_be_a_bool(backwards: Any, message: str) -> None:
    assert refusal(InvalidVersion, stream="s-1", backwards=backwards) == message


@pytest.mark.parametrize("number", [2**63 - 1, 2**63, 2**64, 2**100])
def test_bounds_beyond_64_bits_are_accepted(number: int) -> None:
    # Past every version a store can hold is past the end (guarantee 13), not an error.
    assert check_read("s-1", number, number, backwards=True) == Read("s-1", number, number, True, None)
    assert check_read(GLOBAL_LOG, number, number) == Read("$all", number, number, False, None)


def test_the_first_problem_is_reported_in_a_fixed_order() -> None:
    # name, then start, then limit, then backwards
    assert refusal(InvalidStreamName, stream="", start=-1, limit=-1, backwards=1) == (
        "invalid stream name '': must have 1 to 512 characters, not 0"
    )
    assert refusal(InvalidVersion, stream="s-1", start=-1, limit=-2, backwards=1) == ("s-1: invalid version -1")
    assert refusal(InvalidVersion, stream="s-1", limit=-2, backwards=1) == ("s-1: invalid version 'limit=-2'")


# -- global reads ----------------------------------------------------------------------------------


def test_a_global_read_is_accepted_as_given() -> None:
    assert check_read(GLOBAL_LOG, 0) == Read("$all", 0, None, False, None)
    assert check_read(GLOBAL_LOG, 7, 3, categories="users") == Read("$all", 7, 3, False, ("users",))


def test_a_global_read_starts_after_a_position() -> None:
    # after=0 is the log's beginning; None is no position (and no "from the end" either).
    assert refusal(InvalidVersion, stream=GLOBAL_LOG) == "$all: invalid version None"
    assert refusal(InvalidVersion, stream=GLOBAL_LOG, start=-1) == "$all: invalid version -1"
    assert refusal(InvalidVersion, stream=GLOBAL_LOG, start=True) == ("$all: invalid version True")
    assert refusal(InvalidVersion, stream=GLOBAL_LOG, start=0, limit=-(2**100)) == (
        f"$all: invalid version 'limit={-(2**100)}'"
    )


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        (None, None),
        ("users", ("users",)),  # one name, not its letters
        (["users", "orders"], ("users", "orders")),
        (("orders", "users", "orders", "users"), ("orders", "users")),  # repeats dropped, first place kept
        ([], ()),
        (iter(["users"]), ("users",)),
    ],
)
def test_categories_are_normalised(categories: Any, expected: tuple[str, ...] | None) -> None:
    assert check_read(GLOBAL_LOG, 0, categories=categories).categories == expected


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ("users-1", "invalid stream name 'users-1': a category contains no '-'"),
        ("", "invalid stream name '': must have 1 to 512 characters, not 0"),
        (b"users", "invalid stream name b'users': categories must be a category name or an iterable of them"),
        (42, "invalid stream name 42: categories must be a category name or an iterable of them"),
        (True, "invalid stream name True: categories must be a category name or an iterable of them"),
        (["users", 3], "invalid stream name 3: must be a str, not int"),
        (["users", None], "invalid stream name None: must be a str, not NoneType"),
    ],
)
def test_bad_categories_are_refused(categories: Any, message: str) -> None:
    assert refusal(InvalidStreamName, stream=GLOBAL_LOG, start=0, categories=categories) == message


def test_a_bad_after_is_reported_before_bad_categories() -> None:
    assert refusal(InvalidVersion, stream=GLOBAL_LOG, start=-1, categories=42) == ("$all: invalid version -1")


def test_what_matches_nothing() -> None:
    assert check_read("s-1", limit=0).matches_nothing is True
    assert check_read(GLOBAL_LOG, 0, categories=[]).matches_nothing is True
    assert check_read(GLOBAL_LOG, 0, 0, categories="users").matches_nothing is True
    assert check_read("s-1").matches_nothing is False
    assert check_read(GLOBAL_LOG, 2**100).matches_nothing is False  # past the end, but a subscription waits there
    assert check_read(GLOBAL_LOG, 0, 1, categories="users").matches_nothing is False


# -- imports ---------------------------------------------------------------------------------------


def test_runs_of_groups_consecutive_events_of_one_stream() -> None:
    a0, a1, b0, a2 = recorded("a-1", 0, 1), recorded("a-1", 1, 2), recorded("b-1", 0, 3), recorded("a-1", 2, 4)
    assert runs_of([a0, a1, b0, a2], 1000) == [[a0, a1], [b0], [a2]]
    assert runs_of([], 1000) == []


def test_runs_of_checks_events_like_appends() -> None:
    hostile: list[Any] = [recorded("a-1", 0, 1), "not an event"]
    with pytest.raises(InvalidEvent) as info:
        runs_of(hostile, 1000)
    assert str(info.value) == "$import: invalid event at index 1: expected a RecordedEvent, not str"
    with pytest.raises(InvalidStreamName) as name:
        runs_of([recorded(" a-1", 0, 1)], 1000)
    assert str(name.value) == "invalid stream name ' a-1': has leading or trailing whitespace"
    big = RecordedEvent("a-1", 0, 1, UUID(int=1), "Happened", b"x" * 11, b"", WHEN)
    with pytest.raises(InvalidEvent) as size:
        runs_of([recorded("b-1", 0, 1), big], 10)
    assert str(size.value) == "a-1: invalid event at index 0: 11 bytes of data and metadata exceed the limit of 10"


# -- AppendResult.of -------------------------------------------------------------------------------


def test_append_result_of_what_was_written() -> None:
    written = [recorded("s-1", 3, 7, WHEN), recorded("s-1", 4, 9, LATER)]
    assert AppendResult.of("s-1", written) == AppendResult("s-1", 4, 9, (7, 9), LATER)
    assert AppendResult.of("s-1", written[:1]) == AppendResult("s-1", 3, 7, (7,), WHEN)
    assert AppendResult.of("s-1", tuple(written)) == AppendResult("s-1", 4, 9, (7, 9), LATER)


def test_append_result_of_nothing_written_is_the_streams_head() -> None:
    head = recorded("s-1", 5, 12, WHEN)
    assert AppendResult.of("s-1", [], head) == AppendResult("s-1", 5, 12, (), WHEN)
    assert AppendResult.of("s-1", []) == AppendResult("s-1", None, 0, (), None)
    assert AppendResult.of("s-1", (), None) == AppendResult("s-1", None, 0, (), None)


def test_append_result_of_ignores_the_head_when_something_was_written() -> None:
    head = recorded("s-1", 2, 5, WHEN)
    written = [recorded("s-1", 3, 6, LATER)]
    assert AppendResult.of("s-1", written, head) == AppendResult("s-1", 3, 6, (6,), LATER)


# -- every store reads through check_read -------------------------------------------------------


async def test_every_store_reads_through_check_read(store: EventStore) -> None:
    """The same refusals, in the same words, on memory, SQLite and PostgreSQL."""
    await store.append("users-1", [NewEvent("Happened", b"{}")])
    nothing: Any = None
    one: Any = 1
    raw: Any = b"users"
    cases: list[tuple[Any, type[EpochError], str]] = [
        (
            store.read_stream("users-1", backwards=one),
            InvalidVersion,
            "users-1: invalid version 'backwards=1'",
        ),
        (
            store.read_stream(" users-1"),
            InvalidStreamName,
            "invalid stream name ' users-1': has leading or trailing whitespace",
        ),
        (store.read_all(after=nothing), InvalidVersion, "$all: invalid version None"),
        (store.read_all(limit=-1), InvalidVersion, "$all: invalid version 'limit=-1'"),
        (
            store.subscribe(categories=raw),
            InvalidStreamName,
            "invalid stream name b'users': categories must be a category name or an iterable of them",
        ),
    ]
    for read, kind, message in cases:
        with pytest.raises(kind) as info:
            await anext(read)
        assert str(info.value) == message
    assert [e.stream async for e in store.read_all(after=0, limit=0)] == []
    assert [e.stream async for e in store.read_all(categories="users")] == ["users-1"]
