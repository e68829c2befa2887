"""``dcb_long``: decisions per second over a query that already matches many events.

One course holds ``events`` enrolments (~200 bytes of JSON each, tagged ``course:c``); each decision
enrols one more student: it reads the events the course's tag matches, folds them into a seat count,
decides that a seat is free, and appends an ``Enrolled`` event on the condition that no event with that
tag was recorded since the read. One task, decisions one after another, as a course service would.

epoch: ``DecisionHandler`` through the public API, without snapshots (``no_snapshots``: every decision
folds the whole course) and with ``Snapshots(every=100)`` (``snapshots``: a decision starts from the
newest snapshot of the course's state and reads only the events after it; docs/snapshots.md).
eventsourcing: its ``dcb`` recorder read then appended with a ``DCBAppendCondition``, folding with
``json.loads``. It keeps no snapshots of a query's state, so its side folds the whole course in both
variants (the same work twice: its figure for ``snapshots`` is the one way it has). It has recorders for
memory and PostgreSQL only, so on SQLite epoch runs alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.domain import NOTE
from epoch import Codec, Decider, DecisionHandler, EventStore, NewEvent, Query, QueryItem, Snapshots

TAG = "course:c"
EVERY = 100
"""The snapshot interval of the ``snapshots`` variant (events folded)."""


@dataclass(frozen=True, slots=True)
class Enroll:
    student: str


@dataclass(frozen=True, slots=True)
class Enrolled:
    student: str
    note: str = NOTE


@dataclass(frozen=True, slots=True)
class Seats:
    taken: int = 0


def decide(command: Enroll, state: Seats) -> list[Enrolled]:
    return [Enrolled(command.student)]  # the course has room for all: the fold is the work measured


def evolve(state: Seats, event: Enrolled) -> Seats:
    return Seats(state.taken + 1)


course: Decider[Enroll, Seats, Enrolled] = Decider(decide=decide, evolve=evolve, initial_state=Seats())
codec: Codec[Enrolled] = Codec([Enrolled], tags=lambda event: (TAG,))
QUERY = Query([QueryItem(types=("Enrolled",), tags=(TAG,))])


def _data(n: int) -> bytes:
    return json.dumps({"student": f"f{n}", "note": NOTE}).encode()


async def epoch_fill(store: EventStore, events: int) -> None:
    """``events`` enrolments, 1,000 per append (untimed)."""
    for first in range(0, events, 1_000):
        batch = [NewEvent("Enrolled", _data(n), tags=(TAG,)) for n in range(first, min(events, first + 1_000))]
        await store.append(f"filler-{first}", batch)


async def epoch_decisions(store: EventStore, events: int, decisions: int, snapshots: bool) -> float:
    """Seconds for ``decisions`` enrolments through one ``DecisionHandler``, after ``events`` filled."""
    await epoch_fill(store, events)
    handler = DecisionHandler(
        store,
        course,
        codec,
        query=lambda command: QUERY,
        stream=lambda command: f"student-{command.student}",
        snapshots=Snapshots(every=EVERY) if snapshots else None,
    )
    started = time.perf_counter()
    for n in range(decisions):
        result = await handler.execute(Enroll(f"s{n}"))
    elapsed = time.perf_counter() - started
    assert result.state == Seats(events + decisions), result.state
    return elapsed


def es_decisions(app: Any, events: int, decisions: int) -> float:
    """The same decisions through eventsourcing's DCB recorder (``app``: its ``DCBApplication``)."""
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem

    recorder = app.recorder
    query = DCBQuery(items=[DCBQueryItem(types=["Enrolled"], tags=[TAG])])
    for first in range(0, events, 1_000):
        recorder.append(
            [DCBEvent(type="Enrolled", data=_data(n), tags=[TAG]) for n in range(first, min(events, first + 1_000))]
        )
    started = time.perf_counter()
    taken = 0
    for n in range(decisions):
        response = recorder.read(query)
        taken = 0
        for sequenced in response:
            json.loads(sequenced.event.data)
            taken += 1
        data = json.dumps({"student": f"s{n}", "note": NOTE}).encode()
        recorder.append([DCBEvent(type="Enrolled", data=data, tags=[TAG])], DCBAppendCondition(query, response.head))
    elapsed = time.perf_counter() - started
    assert taken + 1 == events + decisions, taken
    return elapsed
