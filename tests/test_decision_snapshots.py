"""DecisionHandler with snapshots on memory, SQLite and PostgreSQL: a decision starts from the snapshot of
its query's state and reads only what follows; any erasure in the store (a hard delete, a truncation, a
scavenge, by this store or another one on the same database) makes the snapshots unusable; a snapshot
is never saved from a read an erasure overtook; keys tell deciders, queries and streams apart; and the
store entries refuse bad input. The model test at the end checks that snapshots change nothing but speed."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epoch import (
    Codec,
    ConfigurationError,
    Decider,
    DecisionHandler,
    EventStore,
    KeyStore,
    NewEvent,
    Personal,
    Query,
    QueryItem,
    RecordedEvent,
    Snapshots,
    StoreUnavailable,
    open_store,
)
from epoch.snapshots import StateCodec
from epoch.stores import SupportsQuerySnapshots, query_snapshot_store
from tests.dcb_stores import DCB_BACKENDS, SQL_DCB_BACKENDS, dcb_url
from tests.hostile import any_text

# -- a small domain: students enrolling in courses; each student's events in ``student-{who}`` -----


@dataclass(frozen=True, slots=True)
class Enroll:
    course: str
    who: str


@dataclass(frozen=True, slots=True)
class Enrolled:
    course: str
    who: str


@dataclass(frozen=True, slots=True)
class Noted:
    """An untagged event of a student's own stream: only a handler with ``read_stream`` folds it."""

    who: str
    text: str


@dataclass(frozen=True, slots=True)
class Roster:
    students: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def decide(command: Enroll, state: Roster) -> list[Enrolled]:
    return [] if command.who in state.students else [Enrolled(command.course, command.who)]


def evolve(state: Roster, event: Enrolled | Noted) -> Roster:
    if isinstance(event, Enrolled):
        return Roster((*state.students, event.who), state.notes)
    return Roster(state.students, (*state.notes, event.text))


def evolve_counting(state: Roster, event: Enrolled | Noted) -> Roster:
    """A second decider's evolve over the same query (it keeps only the last student)."""
    return Roster(state.students[-1:] if not isinstance(event, Enrolled) else (event.who,), state.notes)


roster: Decider[Enroll, Roster, Enrolled | Noted] = Decider(decide=decide, evolve=evolve, initial_state=Roster())
last_only: Decider[Enroll, Roster, Enrolled | Noted] = Decider(
    decide=decide, evolve=evolve_counting, initial_state=Roster()
)
codec: Codec[Enrolled | Noted] = Codec(
    [Enrolled, Noted], tags=lambda e: (f"course:{e.course}",) if isinstance(e, Enrolled) else ()
)


def course_query(command: Enroll) -> Query:
    return Query([QueryItem(tags=(f"course:{command.course}",))])


def student(command: Enroll) -> str:
    return f"student-{command.who}"


def handler_for(store: EventStore, every: int | None = 5, **options: Any) -> DecisionHandler[Enroll, Roster, Any]:
    snapshots = None if every is None else Snapshots(every=every, version=options.pop("version", 1))
    return DecisionHandler(
        store, options.pop("decider", roster), codec, query=options.pop("query", course_query),
        stream=options.pop("stream", student), snapshots=snapshots, **options,
    )  # fmt: skip


@pytest.fixture(params=DCB_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dcb_url(request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[EventStore]:
    async with open_store(url) as opened:
        yield opened


def stream_snapshot(first: int | None, state: Roster) -> bytes:
    """A read_stream snapshot's data: the stream's first version folded, and the state."""
    return b"[%s,%s]" % (b"null" if first is None else str(first).encode(), StateCodec[Roster](Roster).encode(state))


def capable(store: EventStore) -> SupportsQuerySnapshots:
    found = query_snapshot_store(store)
    assert found is not None
    return found


class Counting:
    """The real store, counting what each ``read_query``/``read_stream`` asked for and yielded (and, as
    a third-party wrapper would be, without the query-snapshot capability)."""

    def __init__(self, store: EventStore) -> None:
        self.inner = store
        self.queries: list[tuple[int, int]] = []  # (after, events yielded)
        self.streams: list[tuple[int | None, int]] = []  # (from_version, events yielded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        self.queries.append((after, 0))
        async for recorded in self.inner.read_query(query, after, limit):
            self.queries[-1] = (after, self.queries[-1][1] + 1)
            yield recorded

    async def read_stream(
        self, stream: str, from_version: int | None = None, **options: Any
    ) -> AsyncIterator[RecordedEvent]:
        self.streams.append((from_version, 0))
        async for recorded in self.inner.read_stream(stream, from_version, **options):
            self.streams[-1] = (from_version, self.streams[-1][1] + 1)
            yield recorded


class Reads(Counting, SupportsQuerySnapshots):
    """:class:`Counting`, with the store's query snapshots."""

    async def load_query_snapshot(self, key: str, schema_version: int) -> Any:
        return await capable(self.inner).load_query_snapshot(key, schema_version)

    async def save_query_snapshot(self, *args: Any, **kwargs: Any) -> bool:
        return await capable(self.inner).save_query_snapshot(*args, **kwargs)

    async def query_snapshot_status(self) -> Any:
        return await capable(self.inner).query_snapshot_status()

    async def drop_query_snapshots(self) -> int:
        return await capable(self.inner).drop_query_snapshots()


async def enroll(store: EventStore, students: Iterable[int], course: str = "math", **options: Any) -> Roster:
    handler = handler_for(store, **options)
    state = Roster()
    for n in students:
        state = (await handler.execute(Enroll(course, f"s{n}"))).state
    return state


async def fold_of(store: EventStore, course: str) -> Roster:
    """The state without any snapshot: every matching event folded."""
    state = Roster()
    async for recorded in store.read_query(Query([QueryItem(tags=(f"course:{course}",))])):
        state = evolve(state, codec.decode_data(recorded))
    return state


def names(n: range) -> tuple[str, ...]:
    return tuple(f"s{i}" for i in n)


# -- starting from a snapshot -----------------------------------------------------------------------


async def test_a_decision_starts_from_its_snapshot_and_reads_only_what_follows(store: EventStore) -> None:
    # Decision k folds the k-1 events before it: the 6th folds 5 (a multiple of 5: a snapshot of them),
    # the 11th folds 10 (the next multiple: a new snapshot); the 12th folds 11 (not due).
    await enroll(store, range(12))
    [status] = await capable(store).query_snapshot_status()
    positions = [r.position async for r in store.read_all()]
    assert (status.schema_version, status.count, status.position, status.usable) == (1, 10, positions[9], True)
    assert status.label == "tag:course:math"

    counted = Reads(store)
    result = await handler_for(cast(EventStore, counted)).execute(Enroll("math", "s12"))
    assert counted.queries == [(positions[9], 2)]  # the two events after the snapshot, no more
    assert result.state == Roster(names(range(13))) == await fold_of(store, "math")
    assert (result.version, result.attempts) == (0, 1)


async def test_without_snapshots_or_below_every_no_snapshot_is_written(store: EventStore) -> None:
    await enroll(store, range(12), every=None)
    await enroll(store, range(12, 16), course="art", every=50)  # folds at most 3 events
    assert await capable(store).query_snapshot_status() == []


async def test_an_empty_decision_from_a_snapshot_names_the_streams_head(store: EventStore) -> None:
    await enroll(store, range(6), read_stream=True)  # s5's decision folded 5: a snapshot over student-s5
    positions = [r.position async for r in store.read_all()]
    counted = Reads(store)
    again = await handler_for(cast(EventStore, counted), read_stream=True).execute(Enroll("math", "s5"))
    assert (counted.queries, counted.streams) == ([(positions[4], 1)], [(None, 1)])
    assert (again.events, again.version, again.position) == ([], 0, positions[5])
    assert again.state == Roster(names(range(6)))


async def test_an_empty_decision_on_a_stream_as_its_snapshot_left_it_reads_the_streams_head(
    store: EventStore,
) -> None:
    notes = [NewEvent("Noted", b'{"who":"s9","text":"one"}'), NewEvent("Noted", b'{"who":"s9","text":"two"}')]
    await store.append("student-s9", notes)
    await enroll(store, range(5), read_stream=True)
    await enroll(store, [9], read_stream=True)  # folds 5 enrolments and 2 notes: a snapshot
    # A snapshot taken after s9's last event (as a decision that appended nothing more would leave it):
    key = (await capable(store).query_snapshot_status())[0].key
    state = Roster((*names(range(5)), "s9"), ("one", "two"))
    head = await store.head_position()
    data = stream_snapshot(0, state)  # s9's versions 0 to 2
    assert await capable(store).save_query_snapshot(key, 1, head, 8, 2, data, 0, "by hand") is True
    counted = Reads(store)
    again = await handler_for(cast(EventStore, counted), read_stream=True).execute(Enroll("math", "s9"))
    s9 = [r async for r in store.read_stream("student-s9")]
    # The stream's first event (it still starts at 0), then from the snapshot's own last event on: the head.
    assert (counted.queries, counted.streams) == ([(head, 0)], [(None, 1), (2, 1)])
    assert (again.events, again.version, again.position, again.state) == ([], 2, s9[-1].position, state)


async def test_with_read_stream_the_streams_own_events_after_the_snapshot_are_folded(store: EventStore) -> None:
    await store.append("student-s9", [NewEvent("Noted", b'{"who":"s9","text":"early"}')])
    handler = handler_for(store, read_stream=True)
    for n in range(6):
        await handler.execute(Enroll("math", f"s{n}"))
    # Each student's handler reads its own stream: s9's snapshot comes with s9's decisions only.
    await store.append("student-s9", [NewEvent("Noted", b'{"who":"s9","text":"late"}')])
    first = await handler.execute(Enroll("math", "s9"))  # folds 6 enrolments + 2 notes: a snapshot (8 // 5)
    assert first.state == Roster((*names(range(6)), "s9"), ("early", "late"))
    [status] = [s for s in await capable(store).query_snapshot_status() if "student-s9" in s.label]
    assert (status.count, status.label) == (8, "tag:course:math + stream student-s9")

    await store.append("student-s9", [NewEvent("Noted", b'{"who":"s9","text":"after"}')])
    counted = Reads(store)
    again = await handler_for(cast(EventStore, counted), read_stream=True).execute(Enroll("math", "s9"))
    # The stream's first event (still version 0), then from the snapshot's last one: it, s9's Enrolled, the note.
    assert counted.streams == [(None, 1), (1, 3)]
    assert again.state == Roster((*names(range(6)), "s9"), ("early", "late", "after"))
    assert (again.events, again.version) == ([], 3)


async def test_the_streams_own_events_a_snapshot_holds_are_not_folded_again_from_the_query(
    store: EventStore,
) -> None:
    # A snapshot's position is the query's; with read_stream its version may cover a stream event past
    # it (on PostgreSQL a stream read can see an event the query's visibility horizon still hides).
    await enroll(store, range(5), read_stream=True)
    await enroll(store, [9], read_stream=True)  # folds 5: a snapshot over student-s9
    [s9] = [r async for r in store.read_stream("student-s9")]
    key = next(s.key for s in await capable(store).query_snapshot_status() if "student-s9" in s.label)
    state = Roster((*names(range(5)), "s9"))
    data = stream_snapshot(0, state)
    assert await capable(store).save_query_snapshot(key, 1, s9.position - 1, 6, 0, data, 0, "by hand") is True
    counted = Reads(store)
    again = await handler_for(cast(EventStore, counted), read_stream=True).execute(Enroll("math", "s9"))
    assert (counted.queries, counted.streams) == ([(s9.position - 1, 1)], [(None, 1), (0, 1)])
    assert (again.events, again.version, again.state) == ([], 0, state)  # s9 once, not twice


# -- erasures -------------------------------------------------------------------------------------------


async def erase(store: EventStore, how: str, stream: str) -> None:
    if how == "hard delete":
        await store.delete_stream(stream, hard=True)
    elif how == "truncate":
        await store.truncate_before(stream, 1)
    else:
        await store.set_stream_limits(stream, max_count=1)
        await store.append(stream, [NewEvent("Noted", b'{"who":"x","text":"pad"}')])
        assert await store.scavenge() == 1


@pytest.mark.parametrize("how", ["hard delete", "truncate", "scavenge"])
async def test_an_erasure_of_a_folded_event_makes_the_snapshot_unusable(store: EventStore, how: str) -> None:
    await enroll(store, range(12))
    [erased_at] = [r.position async for r in store.read_stream("student-s4")]
    await erase(store, how, "student-s4")
    snapshot, erasures = await capable(store).load_query_snapshot(
        (await capable(store).query_snapshot_status())[0].key, 1
    )
    assert (snapshot, erasures) == (None, 1)
    assert [s.usable for s in await capable(store).query_snapshot_status()] == [False]

    counted = Reads(store)
    result = await handler_for(cast(EventStore, counted)).execute(Enroll("math", "s12"))
    assert counted.queries == [(0, 11)]  # from the start: s4's enrolment is gone
    assert result.state == Roster(tuple(n for n in names(range(13)) if n != "s4")) == await fold_of(store, "math")
    assert erased_at not in [r.position async for r in store.read_all()]
    [status] = await capable(store).query_snapshot_status()  # 11 // 5 > 0: a new one, of the new count
    assert (status.count, status.usable) == (11, True)


async def test_an_erasure_anywhere_in_the_store_makes_every_query_snapshot_unusable(store: EventStore) -> None:
    await enroll(store, range(6))
    await enroll(store, range(6), course="art")
    await store.append("other-1", [NewEvent("Noted", b"{}"), NewEvent("Noted", b"{}")])
    await store.truncate_before("other-1", 1)  # no course's event: still an erasure
    assert [s.usable for s in await capable(store).query_snapshot_status()] == [False, False]


async def test_a_soft_delete_or_an_erasure_of_nothing_leaves_the_snapshots_usable(store: EventStore) -> None:
    await enroll(store, range(6))
    await store.delete_stream("student-s1")  # soft: read_query still shows its events
    await store.truncate_before("student-s2", 0)  # erases nothing
    await store.delete_stream("never-written", hard=True)  # a tombstone, nothing erased
    assert await store.scavenge() == 0
    [status] = await capable(store).query_snapshot_status()
    assert status.usable is True
    assert (await capable(store).load_query_snapshot(status.key, 1))[1] == 0


async def test_a_snapshot_is_not_saved_when_an_erasure_overtook_its_read(store: EventStore) -> None:
    await enroll(store, range(5))  # no snapshot yet: the 5th decision folded 4
    await store.append("other-1", [NewEvent("Noted", b"{}"), NewEvent("Noted", b"{}")])

    class Erasing(Reads):
        async def read_query(
            self, query: Query, after: int = 0, limit: int | None = None
        ) -> AsyncIterator[RecordedEvent]:
            async for recorded in super().read_query(query, after, limit):
                yield recorded
            await self.inner.truncate_before("other-1", 1)  # between the read and the save

    result = await handler_for(cast(EventStore, Erasing(store))).execute(Enroll("math", "s5"))
    assert result.state == Roster(names(range(6)))
    assert await capable(store).query_snapshot_status() == []  # folded 5: due, but refused


@pytest.mark.parametrize("url", SQL_DCB_BACKENDS, indirect=True)
async def test_an_erasure_by_another_store_on_the_same_database_is_seen(url: str) -> None:
    async with open_store(url) as mine, open_store(url) as theirs:
        await enroll(mine, range(12))
        before = await handler_for(mine).execute(Enroll("math", "s12"))
        assert before.state == Roster(names(range(13)))
        await theirs.delete_stream("student-s0", hard=True)
        result = await handler_for(mine).execute(Enroll("math", "s13"))
        assert result.state == Roster(names(range(1, 14)))


# -- read_stream: a snapshot only while the stream reads as it did -------------------------------------


def note(text: str) -> NewEvent:
    return NewEvent("Noted", b'{"who":"s9","text":"%s"}' % text.encode())


def s9_handler(store: EventStore, every: int | None = 1, **options: Any) -> DecisionHandler[Enroll, Roster, Any]:
    return handler_for(store, every=every, read_stream=True, stream=lambda command: "student-s9", **options)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("max_count", Roster(("a",))),  # only version 3, a's enrolment, still reads
        ("max_age", Roster(("a",), ("n4",))),  # every event but the new one aged out, with no write at all
        ("soft delete", Roster(("a",))),  # read_query still shows a's enrolment
        ("soft delete and a new event", Roster(("a",), ("n4",))),
    ],
)
async def test_a_stream_snapshot_is_used_only_while_the_stream_reads_from_where_it_was_folded(
    store: EventStore, how: str, expected: Roster
) -> None:
    await store.append("student-s9", [note("n0"), note("n1"), note("n2")])
    await s9_handler(store).execute(Enroll("math", "a"))  # a snapshot of s9's versions 0 to 2, erasing nothing
    if how == "max_count":
        await store.set_stream_limits("student-s9", max_count=1)
    elif how == "max_age":  # every event ages out, with no write at all; then a new one
        await store.set_stream_limits("student-s9", max_age=timedelta(milliseconds=500))
        await asyncio.sleep(0.6)
        await store.append("student-s9", [note("n4")])
    else:
        await store.delete_stream("student-s9")
        if how == "soft delete and a new event":
            await store.append("student-s9", [note("n4")])
    [status] = await capable(store).query_snapshot_status()
    assert (status.count, status.usable) == (3, True)
    fast, slow = s9_handler(store), s9_handler(store, every=None)
    with_snapshot, without = await fast.execute(Enroll("math", "a")), await slow.execute(Enroll("math", "a"))
    assert (with_snapshot.events, with_snapshot.state) == ([], expected)  # decided on the stream as it reads
    assert (with_snapshot.version, with_snapshot.position, with_snapshot.state) == (
        without.version, without.position, without.state
    )  # fmt: skip
    decided = await fast.execute(Enroll("math", "b"))  # and it appends, guarded by what it read
    assert (decided.version, decided.attempts, decided.state) == (
        await store.stream_version("student-s9"), 1, Roster(("a", "b"), expected.notes)
    )  # fmt: skip


@pytest.mark.parametrize("every", [None, 1])
async def test_with_read_stream_a_stream_whose_every_event_aged_out_still_takes_decisions(
    store: EventStore, every: int | None
) -> None:
    """As CommandHandler: decided on what reads show (nothing of the stream), guarded by its version."""
    await store.append("student-s9", [note("n0"), note("n1"), note("n2")])
    handler = s9_handler(store, every=every)
    await handler.execute(Enroll("math", "a"))  # version 3
    await store.set_stream_limits("student-s9", max_age=timedelta(milliseconds=200))
    await asyncio.sleep(0.3)
    assert [e async for e in store.read_stream("student-s9")] == []
    decided = await handler.execute(Enroll("math", "b"))
    assert (decided.version, decided.attempts, decided.state) == (4, 2, Roster(("a", "b")))
    assert [(e.version, e.type) async for e in store.read_stream("student-s9")] == [(4, "Enrolled")]


# -- keys, schema versions, bad snapshots -------------------------------------------------------------


async def test_two_deciders_over_one_query_keep_two_snapshots(store: EventStore) -> None:
    await enroll(store, range(6))
    other = await enroll(store, range(6, 12), decider=last_only)
    assert other == Roster(("s11",))  # its own fold, never the roster's snapshot
    statuses = await capable(store).query_snapshot_status()
    assert sorted((s.label, s.count) for s in statuses) == [("tag:course:math", 5), ("tag:course:math", 10)]
    assert len({s.key for s in statuses}) == 2


async def test_one_evolve_with_two_initial_states_keeps_two_snapshots(store: EventStore) -> None:
    seeded = Decider(decide=decide, evolve=evolve, initial_state=Roster(("seed",)))
    await enroll(store, range(6))  # a snapshot of 5 students
    result = await handler_for(store, decider=seeded).execute(Enroll("math", "s6"))
    assert result.state == Roster(("seed", *names(range(7))))  # its own fold, never the roster's snapshot
    assert sorted(s.count for s in await capable(store).query_snapshot_status()) == [5, 6]


def weighted(weight: int, state: Roster, event: Enrolled | Noted) -> Roster:
    return evolve(state, event)


class Rosters:
    """A decider object: its evolve is a method bound to each instance."""

    initial_state = Roster()

    def decide(self, command: Enroll, state: Roster) -> list[Enrolled]:
        return decide(command, state)

    def evolve(self, state: Roster, event: Enrolled | Noted) -> Roster:
        return evolve(state, event)


class Evolving:
    def __call__(self, state: Roster, event: Enrolled | Noted) -> Roster:
        return evolve(state, event)


def _local() -> Any:
    def evolve_here(state: Roster, event: Enrolled | Noted) -> Roster:
        return evolve(state, event)

    return evolve_here


_unnamed_evolves: dict[str, tuple[Any, str]] = {
    "lambda": (lambda state, event: evolve(state, event), "a lambda (tests.test_decision_snapshots.<lambda>)"),
    "partial": (functools.partial(weighted, 1), "a functools.partial of tests.test_decision_snapshots.weighted"),
    "bound method": (
        Rosters().evolve,
        "a method bound to one instance (tests.test_decision_snapshots.Rosters.evolve)",
    ),
    "callable object": (Evolving(), "a callable object (a tests.test_decision_snapshots.Evolving)"),
    "local function": (
        _local(),
        "a function defined inside another one (tests.test_decision_snapshots._local.<locals>.evolve_here)",
    ),
}


@pytest.mark.parametrize("kind", list(_unnamed_evolves))
async def test_an_evolve_without_a_stable_name_needs_a_snapshot_key(store: EventStore, kind: str) -> None:
    evolve_of, described = _unnamed_evolves[kind]
    decider = Rosters() if kind == "bound method" else Decider(decide=decide, evolve=evolve_of, initial_state=Roster())
    with pytest.raises(ConfigurationError) as caught:
        handler_for(store, decider=decider)
    assert str(caught.value) == (
        f"DecisionHandler: snapshots need a decider named the same in every process, and its evolve is {described}:"
        " give the handler snapshot_key='...', a stable name of the decider"
    )
    await enroll(store, range(6), decider=decider, snapshot_key="rosters")  # named: a snapshot of 5
    other = await enroll(store, range(6, 8), decider=last_only, snapshot_key="last only")
    assert other == Roster(("s7",))  # another name: its own fold, never the roster's snapshot
    counted = Reads(store)
    result = await handler_for(cast(EventStore, counted), decider=decider, snapshot_key="rosters").execute(
        Enroll("math", "s8")
    )
    positions = [recorded.position async for recorded in store.read_all()]
    assert (result.state, counted.queries) == (Roster(names(range(9))), [(positions[4], 3)])
    assert sorted(s.count for s in await capable(store).query_snapshot_status()) == [5, 6]


@pytest.mark.parametrize("key", ["", 7, b"rosters"])
async def test_a_snapshot_key_is_a_non_empty_str(store: EventStore, key: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        handler_for(store, snapshot_key=key)
    assert str(caught.value) == f"DecisionHandler(snapshot_key=...) must be a non-empty str, not {key!r}"


async def test_the_key_takes_a_querys_items_as_sets(store: EventStore) -> None:
    def shuffled(command: Enroll) -> Query:
        tags = (f"course:{command.course}",)
        return Query([QueryItem(types=("Noted", "Enrolled"), tags=tags), QueryItem(types=("Enrolled",), tags=tags)])

    def ordered(command: Enroll) -> Query:
        tags = (f"course:{command.course}",)
        return Query([QueryItem(types=("Enrolled",), tags=tags), QueryItem(types=("Enrolled", "Noted"), tags=tags)])

    await enroll(store, range(6), query=shuffled)
    await enroll(store, range(6, 11), query=ordered)  # the 11th folds 10: replaces the one snapshot
    [status] = await capable(store).query_snapshot_status()
    assert (status.label, status.count) == (
        "type:Enrolled tag:course:math | type:Enrolled type:Noted tag:course:math",
        10,
    )


async def test_a_snapshot_of_another_schema_version_is_ignored(store: EventStore) -> None:
    await enroll(store, range(12))
    counted = Reads(store)
    result = await handler_for(cast(EventStore, counted), version=2).execute(Enroll("math", "s12"))
    assert counted.queries == [(0, 12)]
    assert result.state == Roster(names(range(13)))
    statuses = await capable(store).query_snapshot_status()
    assert [(s.schema_version, s.count) for s in statuses] == [(1, 10), (2, 12)]


async def test_a_snapshot_that_does_not_decode_is_skipped_and_logged(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await enroll(store, range(6))
    [status] = await capable(store).query_snapshot_status()
    assert await capable(store).save_query_snapshot(
        status.key, 1, status.position, 5, None, b'{"students": 7}', 0, status.label
    )
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        result = await handler_for(store).execute(Enroll("math", "s6"))
    assert result.state == Roster(names(range(7)))
    assert [r.getMessage() for r in caplog.records] == [
        f"query snapshot {status.key} (tag:course:math) ignored: it does not decode"
        " (Expected `array`, got `int` - at `$.students`)"
    ]


async def test_a_snapshot_that_cannot_be_written_is_logged_and_the_decision_stands(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(Reads):
        async def save_query_snapshot(self, *args: Any, **kwargs: Any) -> bool:
            raise StoreUnavailable("snapshots are down")

    await enroll(store, range(5))
    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        result = await handler_for(cast(EventStore, Down(store))).execute(Enroll("math", "s5"))  # folds 5: due
    assert (result.version, result.state) == (0, Roster(names(range(6))))
    [record] = caplog.records
    key = record.getMessage().split()[2]
    assert record.getMessage() == (
        f"query snapshot {key} (tag:course:math) not written (StoreUnavailable: snapshots are down)"
    )
    assert await capable(store).query_snapshot_status() == []


async def test_an_older_snapshot_never_replaces_a_newer_one(store: EventStore) -> None:
    await enroll(store, range(12))
    [status] = await capable(store).query_snapshot_status()
    assert await capable(store).save_query_snapshot(status.key, 1, status.position - 1, 9, None, b"{}", 0) is True
    [kept] = await capable(store).query_snapshot_status()
    assert (kept.position, kept.count) == (status.position, 10)
    assert await capable(store).save_query_snapshot(status.key, 1, status.position, 10, None, b"{}", 5) is False
    assert await capable(store).drop_query_snapshots() == 1
    assert await capable(store).query_snapshot_status() == []
    assert (await enroll(store, range(12, 13))) == Roster(names(range(13)))  # dropped: folds again


async def test_snapshots_refuse_a_codec_that_seals_personal_data(store: EventStore) -> None:
    @dataclass(frozen=True, slots=True)
    class Signed:
        who: str
        email: Annotated[str, Personal(subject="who")]

    sealing: Codec[Any] = Codec([Signed], keys=KeyStore.for_store(store))
    with pytest.raises(ConfigurationError) as caught:
        DecisionHandler(store, roster, sealing, query=course_query, stream=student, snapshots=Snapshots(every=5))
    assert str(caught.value) == (
        "DecisionHandler: snapshots and a codec that seals personal data do not mix: a snapshot would keep the"
        " plaintext of personal fields, which forgetting a subject must erase"
    )


async def test_a_store_without_query_snapshots_folds_every_event(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    plain = Counting(store)  # not a SupportsQuerySnapshots: as a third-party store
    with caplog.at_level(logging.INFO, logger="epoch.snapshots"):
        handler = handler_for(cast(EventStore, plain))
    assert [r.getMessage() for r in caplog.records] == [
        "Counting keeps no query snapshots: every decision folds its whole query"
    ]
    for n in range(12):
        await handler.execute(Enroll("math", f"s{n}"))
    assert plain.queries[-1] == (0, 11)
    assert await capable(store).query_snapshot_status() == []


async def test_an_idempotent_command_whose_events_a_snapshot_holds_returns_its_first_result(store: EventStore) -> None:
    handler = handler_for(store)
    first = await handler.execute(Enroll("math", "s0"), command_id="enroll-s0")
    await enroll(store, range(1, 12))  # a snapshot of 10 events, s0's among them
    again = await handler.execute(Enroll("math", "s0"), command_id="enroll-s0")
    assert (again.version, again.position, again.state) == (first.version, first.position, first.state)
    assert [e.id for e in again.events] == [e.id for e in first.events]


async def test_a_command_id_that_ran_between_the_first_check_and_the_snapshot_is_not_decided_twice(
    store: EventStore,
) -> None:
    class Overtaking(Reads):
        """The same command id runs to the end elsewhere, and a snapshot holding it is written, just
        before this decision loads its snapshot."""

        ran: Any = None

        async def load_query_snapshot(self, key: str, schema_version: int) -> Any:
            if self.ran is None:
                self.ran = await handler_for(self.inner).execute(Enroll("math", "s0"), command_id="enroll-s0")
                await enroll(self.inner, range(1, 11))  # snapshots at 5 and 10 events, s0's among them
            return await super().load_query_snapshot(key, schema_version)

    overtaking = Overtaking(store)
    again = await handler_for(cast(EventStore, overtaking)).execute(Enroll("math", "s0"), command_id="enroll-s0")
    first = overtaking.ran
    assert (again.version, again.position) == (first.version, first.position)
    assert [e.id for e in again.events] == [e.id for e in first.events] != []  # its result, not an empty decision
    assert [r.stream async for r in store.read_all()].count("student-s0") == 1


def corrupt(url: str, change: str) -> None:
    """Run ``UPDATE <the query snapshots table> SET <change>`` on the store's database, as a hand would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute(f"UPDATE query_snapshots SET {change}")
        connection.close()
    else:
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"UPDATE epoch_query_snapshots SET {change}")


_ROW = "query snapshot '{key}' ignored: its row is invalid ({why})"
_HEAD = "position {position} is not an int from 0 to the store's head, {head}"
_VERSIONS = "query snapshot {key} (tag:course:math + stream student-s9) ignored: its versions do not fit ({why})"


def _case(backend: str, read_stream: bool, change: str, logged: str | None) -> Any:
    marks = [pytest.mark.postgres] if backend == "postgres" else []
    return pytest.param(backend, read_stream, change, logged, marks=marks, id=f"{backend}: {change}")


_SQLITE, _PG = "sqlite", "postgres"


@pytest.mark.parametrize(
    ("url", "read_stream", "change", "logged"),
    [
        _case(_SQLITE, False, "data = CAST(data AS TEXT)", _ROW.replace("{why}", "data of type str, label 'tag:course:math'")),
        _case(_SQLITE, False, "folded = 'x'", _ROW.replace("{why}", "folded 'x' is not an int from 0 to 9223372036854775807")),
        _case(_SQLITE, False, "taken_at = 9223372036854775807", _ROW.replace("{why}", "taken_at 9223372036854775807 is not an instant")),
        _case(_SQLITE, False, "position = -1", _ROW.replace("{why}", _HEAD.replace("{position}", "-1"))),
        _case(_SQLITE, False, "position = 99999", _ROW.replace("{why}", _HEAD.replace("{position}", "99999"))),
        _case(_SQLITE, True, "version = NULL", _VERSIONS.replace("{why}", "first 0, version None")),
        _case(_SQLITE, True, "version = 99", None),  # past the stream's version: its last event is not there
        _case(_PG, False, "position = -1", _ROW.replace("{why}", _HEAD.replace("{position}", "-1"))),
        _case(_PG, False, f"position = {2**63 - 1}", _ROW.replace("{why}", _HEAD.replace("{position}", str(2**63 - 1)))),
        _case(_PG, False, "folded = -1", _ROW.replace("{why}", "folded -1 is not an int from 0 to 9223372036854775807")),
        _case(_PG, False, "taken_at = 'infinity'", _ROW.replace("{why}", "taken_at None is not an instant")),
        _case(_PG, True, "version = NULL", _VERSIONS.replace("{why}", "first 0, version None")),
        _case(_PG, True, "version = 99", None),
    ],
    indirect=["url"],
)  # fmt: skip
async def test_a_corrupt_row_is_no_snapshot(
    url: str, read_stream: bool, change: str, logged: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A row no save could have written (edited by hand): logged, and the decision folds every event."""
    async with open_store(url) as store:
        make = s9_handler if read_stream else handler_for
        for who in ("a0", "a1", "a2"):  # the last one writes a snapshot of a0 and a1
            await make(store, every=1).execute(Enroll("math", who))
        [status] = await capable(store).query_snapshot_status()
        head = await store.head_position()
        corrupt(url, change)
        with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
            fast = await make(store, every=1).execute(Enroll("math", "a1"))  # nothing to decide
        slow = await make(store, every=None).execute(Enroll("math", "a1"))
        assert (fast.events, fast.state, fast.version) == ([], Roster(("a0", "a1", "a2")), 2 if read_stream else 0)
        assert (fast.state, fast.version, fast.position) == (slow.state, slow.version, slow.position)
        expected = [] if logged is None else [logged.format(key=status.key, head=head)]
        assert [r.getMessage() for r in caplog.records] == expected
        listed = await capable(store).query_snapshot_status()  # never raises: an invalid row is left out
        assert [s.key for s in listed] == (
            [] if change.startswith(("data", "folded", "taken", "pos")) else [status.key]
        )
        decided = await make(store, every=1).execute(Enroll("math", "a3"))  # folds 3: a valid snapshot again
        assert decided.state == Roster(("a0", "a1", "a2", "a3"))
        [status] = await capable(store).query_snapshot_status()
        assert (status.count, status.usable) == (3, True)


# -- labels (the store entries' other bad input: epoch.testing.QuerySnapshotContract) ---------------

KEY = "a" * 64


@given(label=any_text | st.text(min_size=990, max_size=1010), data=st.binary(max_size=64))
async def test_any_label_and_bytes_round_trip_or_are_replaced_the_same_way(
    store: EventStore, label: str, data: bytes
) -> None:
    assert await capable(store).save_query_snapshot(KEY, 1, 0, 1, None, data, 0, label) is True
    found, erasures = await capable(store).load_query_snapshot(KEY, 1)
    expected = label[:1000].encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    assert found is not None and erasures == 0
    assert (found.data, found.label, found.count, found.version) == (data, expected, 1, None)


# -- the model: snapshots change nothing but speed ------------------------------------------------------

_examples = itertools.count()
steps = st.lists(
    st.tuples(
        st.sampled_from(["enroll", "enroll", "enroll", "hard delete", "truncate", "scavenge"]), st.integers(0, 3)
    ),
    min_size=1,
    max_size=24,
)


def own_stream(command: Enroll) -> str:
    return "student-" + command.who.rsplit("s", 1)[0]  # e.g. e3g0w2s17: the stream of w2 (generation 0)


@settings(max_examples=25)
@given(plan=steps, every=st.integers(1, 4), read_stream=st.booleans())
async def test_snapshots_change_nothing_but_speed(
    url: str, plan: list[tuple[str, int]], every: int, read_stream: bool
) -> None:
    """Random enrolments into one course by four students' streams, with erasures between them: the state
    a handler with snapshots decides on is always the fold of every event, as without snapshots."""
    n = next(_examples)
    course = f"model{n}"
    generation = dict.fromkeys(range(4), 0)  # a hard delete ends a stream: its student moves to a new one
    async with open_store(url) as store:
        fast = handler_for(store, every=every, read_stream=read_stream, stream=own_stream)
        slow = handler_for(store, every=None, read_stream=read_stream, stream=own_stream)
        for step, (what, who) in enumerate(plan):
            stream = f"student-e{n}g{generation[who]}w{who}"
            if what == "enroll":
                command = Enroll(course, f"e{n}g{generation[who]}w{who}s{step}")
                result = await fast.execute(command)
                assert result.state == (await slow.execute(command)).state  # it finds the student enrolled
                assert result.state.students == (await fold_of(store, course)).students
                assert result.state.students[-1] == command.who
            elif await store.stream_version(stream) is not None:
                if what == "hard delete":
                    await store.delete_stream(stream, hard=True)
                    generation[who] += 1
                elif what == "truncate":
                    await store.truncate_before(stream, (await store.stream_version(stream) or 0) + 1)
                else:
                    await store.set_stream_limits(stream, max_count=1)
                    await store.append(stream, [NewEvent("Noted", b'{"who":"x","text":"pad"}')])
                    await store.scavenge(stream)
                    await store.set_stream_limits(stream)


def test_kurrentdb_keeps_no_query_snapshots() -> None:
    """Its server erases events on its own, which no erasure count of ours would see (docs/stores/kurrentdb.md)."""
    kurrentdb = pytest.importorskip("epoch.stores.kurrentdb")
    assert not issubclass(kurrentdb.KurrentDBEventStore, SupportsQuerySnapshots)
    from epoch.stores.memory import MemoryEventStore
    from epoch.stores.postgres import PostgresEventStore
    from epoch.stores.sqlite import SQLiteEventStore

    assert all(
        issubclass(cls, SupportsQuerySnapshots) for cls in (MemoryEventStore, SQLiteEventStore, PostgresEventStore)
    )
