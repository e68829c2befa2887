"""DecisionHandler on every store: the read, the condition, retries, idempotent command ids, reading a
stream too, metadata and bad input (memory now; SQLite and PostgreSQL through tests/dcb_stores.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import msgspec
import pytest

from epoch import (
    NO_STREAM,
    AppendConditionFailed,
    Codec,
    CommandHandler,
    Decider,
    DecisionHandler,
    EventStore,
    InvalidEvent,
    InvalidQuery,
    InvalidStreamName,
    NewEvent,
    Query,
    QueryItem,
    RecordedEvent,
    StreamClosed,
    WrongExpectedVersion,
    open_store,
)
from epoch.commands import event_id_for
from tests.dcb_stores import DCB_BACKENDS, dcb_url, interleaved

# -- a small domain: seats taken by people, each person's events in ``person-{who}`` ------------


@dataclass(frozen=True, slots=True)
class Take:
    seat: str
    who: str


@dataclass(frozen=True, slots=True)
class Close:
    seat: str
    who: str = "staff"


@dataclass(frozen=True, slots=True)
class Taken:
    seat: str
    who: str


@dataclass(frozen=True, slots=True)
class Closed:
    seat: str


@dataclass(frozen=True, slots=True)
class Noted:
    """An untagged event of a person's own stream (written by a stream decider)."""

    who: str
    text: str


class SeatTaken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Seats:
    holders: tuple[tuple[str, str], ...] = ()  # (seat, who) in the order read
    notes: tuple[str, ...] = ()
    closed: bool = False


def decide(command: Take | Close, state: Seats) -> list[Taken | Closed | Noted]:
    if isinstance(command, Close):
        return [Closed(command.seat)]
    for seat, who in state.holders:
        if seat == command.seat:
            if who == command.who:
                return []
            raise SeatTaken(f"seat {seat} is taken by {who}")
    return [Taken(command.seat, command.who)]


def evolve(state: Seats, event: Taken | Closed | Noted) -> Seats:
    if isinstance(event, Taken):
        return Seats((*state.holders, (event.seat, event.who)), state.notes, state.closed)
    if isinstance(event, Noted):
        return Seats(state.holders, (*state.notes, event.text), state.closed)
    return Seats(state.holders, state.notes, True)


seats: Decider[Take | Close, Seats, Taken | Closed | Noted] = Decider(
    decide=decide, evolve=evolve, initial_state=Seats, is_terminal=lambda state: state.closed
)
codec: Codec[Taken | Closed | Noted] = Codec([Taken, Closed, Noted])


def seat_query(command: Take | Close) -> Query:
    return Query([QueryItem(tags=(f"seat:{command.seat}",))])


def person(command: Take | Close) -> str:
    return f"person-{command.who}"


def seat_tags(event: Taken | Closed | Noted) -> tuple[str, ...]:
    if isinstance(event, Taken):
        return (f"seat:{event.seat}", f"person:{event.who}")
    if isinstance(event, Closed):
        return (f"seat:{event.seat}",)
    return ()


def handler_for(store: EventStore, **options: Any) -> DecisionHandler[Take | Close, Seats, Taken | Closed | Noted]:
    return DecisionHandler(store, seats, codec, query=seat_query, stream=person, tags=seat_tags, **options)


@pytest.fixture(params=DCB_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dcb_url(request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[EventStore]:
    async with open_store(url) as opened:
        yield opened


async def everything(store: EventStore) -> list[tuple[str, int, str, bytes, tuple[str, ...]]]:
    return [(r.stream, r.version, r.type, r.data, r.tags) async for r in store.read_all()]


class RaceOnce:
    """The real store, with one other writer's append run right after the first query read ends (between
    the decision's read and its append), or after every read with ``every=True``."""

    def __init__(self, store: EventStore, race: Callable[[EventStore], Awaitable[object]], every: bool = False) -> None:
        self.inner = store
        self.race: Callable[[EventStore], Awaitable[object]] | None = race
        self.every = every

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        async for recorded in self.inner.read_query(query, after, limit):
            yield recorded
        if self.race is not None:
            race = self.race
            if not self.every:
                self.race = None
            await race(self.inner)


def racing(store: EventStore, race: Callable[[EventStore], Awaitable[object]], every: bool = False) -> EventStore:
    return cast(EventStore, RaceOnce(store, race, every))


# -- deciding over a query ------------------------------------------------------------------------


async def test_a_decision_appends_to_its_stream_with_tags_and_folds_what_it_read(store: EventStore) -> None:
    handler = handler_for(store)
    first = await handler.execute(Take("1A", "ada"))
    assert (first.stream, first.version, first.attempts) == ("person-ada", 0, 1)
    assert [(e.stream, e.version, e.type, e.data, e.tags) for e in first.events] == [
        ("person-ada", 0, "Taken", Taken("1A", "ada"), ("seat:1A", "person:ada"))
    ]
    assert first.position == first.events[0].position
    assert first.state == Seats((("1A", "ada"),))
    with pytest.raises(SeatTaken, match=r"^seat 1A is taken by ada$"):
        await handler.execute(Take("1A", "bob"))
    other = await handler.execute(Take("1B", "bob"))  # another seat: another boundary
    assert other.state == Seats((("1B", "bob"),))
    assert await everything(store) == [
        ("person-ada", 0, "Taken", b'{"seat":"1A","who":"ada"}', ("seat:1A", "person:ada")),
        ("person-bob", 0, "Taken", b'{"seat":"1B","who":"bob"}', ("seat:1B", "person:bob")),
    ]


def tagged(event: Taken | Closed | Noted, *tags: str) -> NewEvent:
    """An event encoded and tagged by hand, as another writer (not this handler) would append it."""
    return msgspec.structs.replace(codec.encode(event), tags=tags)


async def test_the_events_read_come_from_every_stream_in_position_order(store: EventStore) -> None:
    for who in ("ada", "bob", "cy"):  # three streams, one seat tag
        await store.append(f"person-{who}", [tagged(Taken("9Z", who), "seat:9Z")])
    await store.append("person-dan", [tagged(Taken("8Y", "dan"), "seat:8Y")])  # another seat: not read
    result = await handler_for(store).execute(Take("9Z", "ada"))  # ada holds it first: nothing to do
    assert result.events == []
    assert result.state == Seats((("9Z", "ada"), ("9Z", "bob"), ("9Z", "cy")))


async def test_an_empty_decision_returns_the_streams_current_version_and_position(store: EventStore) -> None:
    handler = handler_for(store)
    taken = await handler.execute(Take("2C", "ada"))
    await handler.execute(Take("3C", "bob"))
    head = await store.head_position()
    again = await handler.execute(Take("2C", "ada"))
    assert (again.stream, again.version, again.position, again.events) == ("person-ada", 0, taken.position, [])
    assert again.state == Seats((("2C", "ada"),))
    assert await store.head_position() == head


async def test_an_empty_decision_on_a_stream_never_written_has_no_version(store: EventStore) -> None:
    refuse_nothing = DecisionHandler(
        store, seats, codec, query=lambda command: Query([]), stream=person, tags=seat_tags
    )
    handler = DecisionHandler(store, Decider(lambda c, s: [], evolve, Seats), codec, query=seat_query, stream=person)
    result = await handler.execute(Take("2C", "eve"))
    assert (result.stream, result.version, result.position, result.events, result.state) == (
        "person-eve",
        None,
        0,
        [],
        Seats(),
    )
    # Query([]) reads nothing and its condition never fails: the seat looks free to it.
    await handler_for(store).execute(Take("2D", "ada"))
    free = await refuse_nothing.execute(Take("2D", "dan"))
    assert [e.data for e in free.events] == [Taken("2D", "dan")]
    assert free.state == Seats((("2D", "dan"),))


async def test_a_decide_error_passes_through_and_writes_nothing(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute(Take("5E", "ada"))
    before = await everything(store)
    with pytest.raises(SeatTaken) as raised:
        await handler.execute(Take("5E", "bob"))
    assert type(raised.value) is SeatTaken
    assert await everything(store) == before


async def test_a_terminal_state_refuses_with_stream_closed(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute(Take("6F", "ada"))
    await handler.execute(Close("6F", "ada"))
    before = await everything(store)
    with pytest.raises(StreamClosed, match=r"^person-bob: the stream is closed at version no stream$") as raised:
        await handler.execute(Take("6F", "bob"))
    assert (raised.value.stream, raised.value.version) == ("person-bob", None)
    with pytest.raises(StreamClosed, match=r"^person-ada: the stream is closed at version 1$"):
        await handler.execute(Take("6F", "ada"))
    assert await everything(store) == before


# -- the condition and the retries --------------------------------------------------------------


async def bob_takes_7g(store: EventStore) -> None:
    await store.append("person-bob", [tagged(Taken("7G", "bob"), "seat:7G", "person:bob")])


async def test_an_event_matching_the_query_recorded_meanwhile_makes_the_decision_run_again(store: EventStore) -> None:
    handler = handler_for(racing(store, bob_takes_7g))
    with pytest.raises(SeatTaken, match=r"^seat 7G is taken by bob$"):
        await handler.execute(Take("7G", "ada"))
    assert await everything(store) == [
        ("person-bob", 0, "Taken", b'{"seat":"7G","who":"bob"}', ("seat:7G", "person:bob"))
    ]

    # A decision that still holds on the new state is appended on its second attempt.
    async def cy_notes(inner: EventStore) -> None:
        await inner.append("person-cy", [tagged(Noted("cy", "hello"), "seat:7H")])

    result = await handler_for(racing(store, cy_notes)).execute(Take("7H", "ada"))
    assert result.attempts == 2
    assert result.state == Seats((("7H", "ada"),), ("hello",))
    assert [(e.stream, e.version) for e in result.events] == [("person-ada", 0)]


async def test_an_event_not_matching_the_query_does_not_disturb_the_decision(store: EventStore) -> None:
    async def elsewhere(inner: EventStore) -> None:
        await inner.append("person-bob", [tagged(Taken("7J", "bob"), "seat:7J")])

    result = await handler_for(racing(store, elsewhere)).execute(Take("7I", "ada"))
    assert result.attempts == 1


async def test_when_the_retries_are_used_up_the_last_condition_failure_is_raised(store: EventStore) -> None:
    count = 0

    async def another_note(inner: EventStore) -> None:
        nonlocal count
        count += 1
        await inner.append("person-cy", [tagged(Noted("cy", f"note {count}"), "seat:8K")])

    handler = handler_for(racing(store, another_note, every=True), retries=2, backoff=0.0001)
    with pytest.raises(AppendConditionFailed) as raised:
        await handler.execute(Take("8K", "ada"))
    last = [r.position async for r in store.read_stream("person-cy")]
    failed = raised.value
    assert (failed.stream, failed.after) == ("person-ada", last[1])
    assert failed.position in (last[2], None)  # a store need not say which event failed the condition
    found = "" if failed.position is None else f" at position {last[2]}"
    assert str(failed) == (
        f"person-ada: append condition failed: an event matching its query was recorded{found}, after position {last[1]}"
    )
    assert count == 3  # 1 + retries decisions, each read raced
    assert await store.stream_version("person-ada") is None


async def test_the_condition_after_is_none_when_nothing_matched(store: EventStore) -> None:
    handler = handler_for(racing(store, bob_takes_7g), retries=0)
    with pytest.raises(AppendConditionFailed) as raised:
        await handler.execute(Take("7G", "ada"))
    assert raised.value.after is None
    assert str(raised.value).endswith(", after the start")


def test_retries_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=r"^retries must be >= 0$"):
        DecisionHandler(cast(EventStore, None), seats, codec, query=seat_query, stream=person, retries=-1)


# -- idempotent command ids ---------------------------------------------------------------------


class Counting:
    """The seats decider, counting its decisions."""

    def __init__(self) -> None:
        self.decisions = 0
        self.evolve = seats.evolve
        self.initial_state = seats.initial_state
        self.is_terminal = seats.is_terminal

    def decide(self, command: Take | Close, state: Seats) -> list[Taken | Closed | Noted]:
        self.decisions += 1
        return decide(command, state)


def counted(store: EventStore, decider: Counting) -> DecisionHandler[Take | Close, Seats, Taken | Closed | Noted]:
    return DecisionHandler(store, decider, codec, query=seat_query, stream=person, tags=seat_tags)


async def test_a_command_id_executed_again_returns_the_first_result_without_deciding(store: EventStore) -> None:
    decider = Counting()
    command_id = UUID("00000000-0000-4000-8000-000000000001")
    await store.append("person-bob", [tagged(Noted("bob", "before"), "seat:1A")])
    first = await counted(store, decider).execute(Take("1A", "ada"), command_id=command_id)
    await store.append("person-cy", [tagged(Noted("cy", "after"), "seat:1A")])  # read by later decisions only
    again = await counted(store, decider).execute(Take("1A", "ada"), command_id=command_id)  # another handler
    assert decider.decisions == 1
    assert [e.id for e in first.events] == [event_id_for(command_id, "person-ada", 0)]
    assert first.events[0].metadata["$command_id"] == str(command_id)
    assert (again.stream, again.version, again.position) == (first.stream, first.version, first.position)
    assert [(e.id, e.data, e.tags, e.metadata) for e in again.events] == [
        (e.id, e.data, e.tags, e.metadata) for e in first.events
    ]
    assert again.state == first.state == Seats((("1A", "ada"),), ("before",))
    assert [r.stream async for r in store.read_all()] == ["person-bob", "person-ada", "person-cy"]


async def test_a_command_id_whose_decision_was_empty_or_failed_records_nothing(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute(Take("2B", "ada"))
    with pytest.raises(SeatTaken):
        await handler.execute(Take("2B", "bob"), command_id="c-1")
    await handler.execute(Take("2B", "ada"), command_id="c-2")  # empty
    assert [r.stream async for r in store.read_all()] == ["person-ada"]
    retried = await handler.execute(Take("3B", "bob"), command_id="c-1")  # decided afresh: nothing was kept
    assert [e.data for e in retried.events] == [Taken("3B", "bob")]


async def test_concurrent_executions_of_one_command_id_write_once(store: EventStore) -> None:
    decider = Counting()
    handler = counted(interleaved(store), decider)
    results = await asyncio.gather(*(handler.execute(Take("4D", "ada"), command_id="once") for _ in range(16)))
    written = [(r.stream, r.version, r.type) async for r in store.read_all()]
    assert written == [("person-ada", 0, "Taken")]
    assert {(r.stream, r.version, r.position, tuple(e.id for e in r.events)) for r in results} == {
        ("person-ada", 0, results[0].position, (event_id_for("once", "person-ada", 0),))
    }
    assert {r.state for r in results} == {Seats((("4D", "ada"),))}


# -- reading the stream too (combined with a stream decider) -------------------------------------


def person_decide(command: str, state: tuple[str, ...]) -> list[Noted]:
    return [Noted("ada", command)]


def person_evolve(state: tuple[str, ...], event: Taken | Closed | Noted) -> tuple[str, ...]:
    return (*state, event.text) if isinstance(event, Noted) else state


notes: Decider[str, tuple[str, ...], Taken | Closed | Noted] = Decider(
    decide=person_decide, evolve=person_evolve, initial_state=()
)


async def test_read_stream_folds_the_streams_untagged_events_with_the_querys_once_each(store: EventStore) -> None:
    stream_decider = CommandHandler(store, notes, "person", codec)  # writes untagged events to person-ada
    await stream_decider.execute("ada", "first")
    await handler_for(store).execute(Take("1A", "ada"))  # in person-ada AND matching the query
    await stream_decider.execute("ada", "second")
    await store.append("person-bob", [tagged(Noted("bob", "elsewhere"), "seat:1A")])  # the query's only
    combined = handler_for(store, read_stream=True)
    result = await combined.execute(Take("1A", "ada"))
    assert (result.events, result.version, result.attempts) == ([], 2, 1)
    assert result.position == [r.position async for r in store.read_stream("person-ada")][-1]
    assert result.state == Seats((("1A", "ada"),), ("first", "second", "elsewhere"))
    taken = await combined.execute(Take("1B", "ada"))
    assert [(e.version, e.data) for e in taken.events] == [(3, Taken("1B", "ada"))]
    # The stream holds 1A too: a stream read folds all of the stream's events, whatever the query.
    assert taken.state == Seats((("1A", "ada"), ("1B", "ada")), ("first", "second"))


async def test_read_stream_guards_the_append_by_the_streams_version(store: EventStore) -> None:
    async def ada_notes(inner: EventStore) -> None:  # the stream decider writes meanwhile, untagged
        await inner.append("person-ada", [codec.encode(Noted("ada", "meanwhile"))])

    result = await handler_for(racing(store, ada_notes), read_stream=True).execute(Take("5E", "ada"))
    assert result.attempts == 2
    assert result.state == Seats((("5E", "ada"),), ("meanwhile",))
    assert [(e.version, e.data) for e in result.events] == [(1, Taken("5E", "ada"))]
    racer = racing(store, ada_notes, every=True)
    with pytest.raises(WrongExpectedVersion, match=r"^person-ada: expected version 1, actual 2$"):
        await handler_for(racer, read_stream=True, retries=0).execute(Take("5F", "ada"))


async def test_read_stream_on_a_new_stream_appends_with_no_stream(store: EventStore) -> None:
    async def first_event(inner: EventStore) -> None:
        await inner.append("person-new", [codec.encode(Noted("new", "x"))], NO_STREAM)

    with pytest.raises(WrongExpectedVersion, match=r"^person-new: expected version NO_STREAM, actual 0$"):
        await handler_for(racing(store, first_event), read_stream=True, retries=0).execute(Take("5H", "new"))


# -- metadata -------------------------------------------------------------------------------------


async def test_metadata_and_correlation_go_into_every_event_as_in_command_handler(store: EventStore) -> None:
    handler = handler_for(store)
    cause = await handler.execute(Take("1A", "ada"), correlation_id="flow-1")
    caused = await handler.execute(Take("1B", "bob"), metadata={"user": "ops"}, causation_id=str(cause.events[0].id))
    (event,) = caused.events
    own = event.metadata["$command_id"]
    assert event.metadata == {
        "user": "ops",
        "$correlation_id": "flow-1",  # the causing event's correlation
        "$causation_id": str(cause.events[0].id),
        "$command_id": own,
    }
    assert (event.correlation_id, event.causation_id) == ("flow-1", str(cause.events[0].id))
    [stored] = [r async for r in store.read_stream("person-bob")]
    assert codec.decode(stored).metadata == event.metadata


# -- bad input: a clear EpochError, nothing stored ------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"tags": lambda event: (" seat",)}, InvalidEvent, "person-ada: invalid event at index 0: tag ' seat' has leading or trailing whitespace"),
        ({"tags": lambda event: "seat:1"}, InvalidEvent, "person-ada: invalid event at index 0: tags(event) must return an iterable of tags, not str"),
        ({"tags": lambda event: 1}, InvalidEvent, "person-ada: invalid event at index 0: tags(event) must return an iterable of tags, not int"),
        ({"stream": lambda command: ""}, InvalidStreamName, "invalid stream name '': must have 1 to 512 characters, not 0"),
        ({"stream": lambda command: 7}, InvalidStreamName, "invalid stream name 7: must be a str, not int"),
        ({"stream": lambda command: "person-\x00"}, InvalidStreamName, "invalid stream name 'person-\\x00': contains a control character"),
        ({"query": lambda command: [QueryItem()]}, InvalidQuery, "person-ada: query(command) must return a Query, not list"),
    ],
)  # fmt: skip
async def test_bad_handler_functions_raise_a_clear_error_and_store_nothing(
    store: EventStore, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    chosen: dict[str, Any] = {"query": seat_query, "stream": person, "tags": seat_tags, **options}
    handler = DecisionHandler(store, seats, codec, **chosen)
    with pytest.raises(error) as raised:
        await handler.execute(Take("1A", "ada"))
    assert str(raised.value) == message
    assert await store.head_position() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metadata": {"x": float("nan")}}, "person-ada: invalid event at index 0: cannot encode 'Taken': metadata $['x'] is nan, and JSON has no NaN or infinity"),
        ({"command_id": 5}, "person-ada: invalid event at index 0: command_id must be a str or UUID, not int"),
        ({"correlation_id": "\ud800"}, "person-ada: invalid event at index 0: correlation_id '\\ud800' contains a lone surrogate"),
        ({"causation_id": b"x"}, "person-ada: invalid event at index 0: causation_id must be a str or UUID, not bytes"),
    ],
)  # fmt: skip
async def test_bad_execute_arguments_raise_invalid_event_and_store_nothing(
    store: EventStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidEvent) as raised:
        await handler_for(store).execute(Take("1A", "ada"), **options)
    assert str(raised.value) == message
    assert raised.value.stream == "person-ada"
    assert await store.head_position() == 0


def _stamped(command: Take | Close, state: Seats, stamp: str) -> list[Taken | Closed | Noted]:
    return [Noted(command.who, f"{command.seat} on {stamp}")]  # what it decides depends on a service (a clock, say)


async def test_a_command_id_whose_append_was_the_replay_gets_the_first_result(store: EventStore) -> None:
    """Another execution of command id ``X`` (another process, with a Monday clock) stores its events
    between this one's read and its append: the append is answered as a replay, and this caller gets the
    first execution's result, not its own Tuesday decision."""
    stamped: Decider[Take | Close, Seats, Taken | Closed | Noted] = Decider(_stamped, evolve, Seats)

    def stamping(on: EventStore) -> DecisionHandler[Take | Close, Seats, Taken | Closed | Noted]:
        return DecisionHandler(on, stamped, codec, query=seat_query, stream=person, tags=seat_tags)

    async def monday(inner: EventStore) -> None:
        first = await stamping(inner).execute(Take("1A", "ada"), services="monday", command_id="X")
        assert [e.data for e in first.events] == [Noted("ada", "1A on monday")]

    result = await stamping(racing(store, monday)).execute(Take("1A", "ada"), services="tuesday", command_id="X")
    assert (result.stream, result.version, [e.data for e in result.events]) == (
        "person-ada",
        0,
        [Noted("ada", "1A on monday")],
    )
    assert [(s, v, t, d) for s, v, t, d, _ in await everything(store)] == [
        ("person-ada", 0, "Noted", b'{"who":"ada","text":"1A on monday"}')
    ]
