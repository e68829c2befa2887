"""OpenTelemetry on commands that FAIL (issue 14): the span still says how many decisions the command
took and how many of its appends a concurrent write refused, whatever ended it — conflicts exhausted, the
decider's own error, ``StreamClosed`` — alone or queued in a batch. Real stores; the concurrent writes are
real appends made by a second writer just before each of the handler's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from epoch import ANY, Codec, CommandHandler, Decider, EventStore, StreamClosed, WrongExpectedVersion
from epoch.examples.users import AddUser, DuplicateName, UserService
from epoch.records import AppendResult, ExpectedVersionLike, NewEvent
from tests.test_telemetry import Recorded, otel, traced_store

__all__ = ["otel", "traced_store"]  # the fixtures, used by name


@dataclass(frozen=True, slots=True)
class Add:
    close: bool = False


@dataclass(frozen=True, slots=True)
class Added:
    pass


@dataclass(frozen=True, slots=True)
class Closed:
    pass


Event = Added | Closed


def _decide(command: Add, count: int) -> list[Event]:
    return [Closed()] if command.close else [Added()]


# A tally that ends with Closed (-1): terminal.
tally: Decider[Add, int, Event] = Decider(
    decide=_decide,
    evolve=lambda count, event: -1 if isinstance(event, Closed) else count + 1,
    initial_state=0,
    is_terminal=lambda count: count < 0,
)
codec: Codec[Event] = Codec([Added, Closed])


class Interfering:
    """The store, where another writer appends to the same stream just before each append made here."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = ANY
    ) -> AppendResult:
        await self._store.append(stream, [codec.encode(Added())])
        return await self._store.append(stream, events, expected_version)


def execute_spans(otel: Recorded) -> list[dict[str, Any]]:
    return [dict(s.attributes or {}) for s in otel.spans() if s.name == "execute tally"]


def counts(attributes: dict[str, Any]) -> tuple[str, int, int, str]:
    return (
        attributes["epoch.command.outcome"],
        attributes["epoch.command.attempts"],
        attributes["epoch.command.conflicts"],
        attributes["error.type"],
    )


async def test_conflicts_exhausted_record_every_attempt_and_conflict(otel: Recorded, traced_store: EventStore) -> None:
    handler = CommandHandler(Interfering(traced_store), tally, "tally", codec, retries=2, backoff=0)

    with pytest.raises(WrongExpectedVersion) as raised:
        await handler.execute(1, Add())

    assert str(raised.value) == "tally-1: expected version 1, actual 2"
    assert execute_spans(otel) == [
        {
            "epoch.stream": "tally-1",
            "epoch.category": "tally",
            "epoch.command.type": "Add",
            "epoch.command.outcome": "conflict",
            "epoch.command.attempts": 3,
            "epoch.command.conflicts": 3,
            "error.type": "WrongExpectedVersion",
        }
    ]
    metrics = otel.metrics()
    assert metrics["epoch.command.conflicts"] == [({"epoch.category": "tally"}, 3)]
    assert metrics["epoch.command.retries"] == [({"epoch.category": "tally"}, 2)]
    assert metrics["epoch.commands"] == [
        ({"epoch.category": "tally", "epoch.command.outcome": "conflict", "error.type": "WrongExpectedVersion"}, 1)
    ]
    # Only the other writer's events were stored: one before each of the three refused appends.
    assert [r.type async for r in traced_store.read_stream("tally-1")] == ["Added"] * 3


async def test_a_queued_command_that_fails_in_a_batch_records_its_counts(
    otel: Recorded, traced_store: EventStore
) -> None:
    handler = CommandHandler(Interfering(traced_store), tally, "tally", codec, retries=1, backoff=0)

    # The first runs alone; the two sent while it runs are decided and appended together, as one batch.
    outcomes = await asyncio.gather(*(handler.execute(1, Add()) for _ in range(3)), return_exceptions=True)

    assert [type(o).__name__ for o in outcomes] == ["WrongExpectedVersion"] * 3
    assert [counts(a) for a in execute_spans(otel)] == [("conflict", 2, 2, "WrongExpectedVersion")] * 3
    metrics = otel.metrics()
    assert metrics["epoch.command.conflicts"] == [({"epoch.category": "tally"}, 6)]
    assert metrics["epoch.command.retries"] == [({"epoch.category": "tally"}, 3)]


async def test_a_decider_error_after_a_conflict_records_both_decisions(
    otel: Recorded, traced_store: EventStore
) -> None:
    mine, theirs = UserService(traced_store, "eu"), UserService(traced_store, "eu")
    await mine.add_user(AddUser("ada"))  # mine caches the directory with ada only
    await theirs.add_user(AddUser("bob"))
    otel.exporter.clear()

    # Decided on the cached state (no bob yet): refused; decided again on the current one: DuplicateName.
    with pytest.raises(DuplicateName):
        await mine.add_user(AddUser("bob"))

    [command] = [s for s in otel.spans() if s.name == "execute users"]
    assert dict(command.attributes or {}) == {
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "epoch.command.type": "AddUser",
        "epoch.command.outcome": "failed",
        "epoch.command.attempts": 2,
        "epoch.command.conflicts": 1,
        "error.type": "DuplicateName",
    }
    metrics = otel.metrics()
    assert metrics["epoch.command.conflicts"] == [({"epoch.category": "users"}, 1)]
    assert metrics["epoch.command.retries"] == [({"epoch.category": "users"}, 1)]


async def test_stream_closed_records_the_decisions_before_it(otel: Recorded, traced_store: EventStore) -> None:
    mine = CommandHandler(traced_store, tally, "tally", codec)
    theirs = CommandHandler(traced_store, tally, "tally", codec)
    await mine.execute(1, Add())  # mine caches a count of 1 at version 0
    await theirs.execute(1, Add(close=True))
    otel.exporter.clear()

    # Decided once on the cached (open) state and refused; the current state is closed.
    with pytest.raises(StreamClosed) as raised:
        await mine.execute(1, Add())
    # A second command finds the cached state closed, confirms it by one read, and never decides.
    with pytest.raises(StreamClosed):
        await mine.execute(1, Add())

    assert str(raised.value) == "tally-1: the stream is closed at version 1"
    assert [counts(a) for a in execute_spans(otel)] == [
        ("failed", 1, 1, "StreamClosed"),
        ("failed", 0, 0, "StreamClosed"),
    ]
    assert [r.type async for r in traced_store.read_stream("tally-1")] == ["Added", "Closed"]
