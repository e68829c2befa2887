"""Specifications for the read side: views, projections (handled twice, for idempotency) and sagas.

::

    ViewSpec(view).given([UserAdded("1", "ada")]).then(expected_state)
    await ProjectionSpec(UserNamesInMemory()).given([UserAdded("1", "ada")]).then({"1": "ada"}, state=lambda p: p.names)
    SagaSpec(name_claims).given(UserAdded("1", "ada")).then([ReserveName("ada", "1")])

Failures are ``AssertionError``s, so they work in any test framework.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from epoch.domain.decider import initial_state_of
from epoch.domain.view import View
from epoch.projections._delivery import TransactionalDelivery, delivery_for
from epoch.projections.checkpoints import SQLCheckpointStore
from epoch.projections.parking import SQLParkingLot
from epoch.projections.projection import kind_of
from epoch.records import EventEnvelope
from epoch.stores import SQLStore, Transaction
from epoch.telemetry import current as current_telemetry

__all__ = ["ProjectionSpec", "SagaSpec", "ViewSpec", "envelopes_for"]

S = TypeVar("S")
E = TypeVar("E")
C = TypeVar("C")
P = TypeVar("P")
E_contra = TypeVar("E_contra", contravariant=True)
C_co = TypeVar("C_co", covariant=True)


class _Reacts(Protocol[E_contra, C_co]):
    """A saga, or any object that reacts to an event with commands."""

    def react(self, event: E_contra) -> Iterable[C_co]: ...


def envelopes_for(events: Iterable[object], stream: str = "spec-1") -> list[EventEnvelope[Any]]:
    """Wrap domain events in envelopes of one stream: versions from 0, positions from 1, stable ids."""
    now = datetime.now(UTC)
    return [
        EventEnvelope(
            stream,
            version,
            version + 1,
            uuid.uuid5(uuid.NAMESPACE_URL, f"{stream}/{version}"),
            str(getattr(event, "event_type", type(event).__name__)),
            event,
            {},
            now,
        )
        for version, event in enumerate(events)
    ]


@dataclass(frozen=True, slots=True)
class ViewSpec(Generic[S, E]):
    """``ViewSpec(view).given(events).then(state)``: the fold of ``events`` equals ``state``."""

    view: View[S, E]
    events: tuple[E, ...] = ()

    def given(self, events: Iterable[E]) -> ViewSpec[S, E]:
        """Events to fold, appended to any given before."""
        return replace(self, events=(*self.events, *events))

    def then(self, state: S) -> None:
        """Assert the state after the events."""
        actual = initial_state_of(self.view)
        for event in self.events:
            actual = self.view.evolve(actual, event)
        if actual != state:
            raise AssertionError(f"expected state\n  {state!r}\nbut the view folded to\n  {actual!r}")


class _SpecTransaction:
    """A transaction on a private in-memory SQLite database, for exactly-once projections."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self) -> None:
        self.connection = sqlite3.connect(":memory:")

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, tuple(params)).fetchall()


class _SpecDatabase(SQLStore):
    """That database as the store's own, so the runner's deliveries take it; every transaction is the one
    open transaction (the spec hands it to ``state`` as it is)."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.tx = _SpecTransaction()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        yield self.tx


@dataclass(frozen=True, slots=True)
class ProjectionSpec(Generic[P]):
    """``await ProjectionSpec(p).given(events).then(expected, state=...)``: handled once and twice.

    The events are handled in order, ``state(projection)`` is compared with ``expected``; then every
    event is delivered again (as after a crash before the checkpoint) and the state must not change —
    the at-least-once contract. Exactly-once projections (``handle_in_transaction``) run on a private
    in-memory SQLite database: ``state(projection, tx)`` may query it, and redelivery is not checked
    (the runner never redelivers to them).
    """

    projection: P
    events: tuple[object, ...] = ()
    stream: str = "spec-1"

    def given(self, events: Iterable[object], stream: str | None = None) -> ProjectionSpec[P]:
        """Domain events of one stream (wrapped with :func:`envelopes_for`)."""
        return replace(self, events=(*self.events, *events), stream=stream or self.stream)

    async def then(self, expected: object, state: Callable[..., object]) -> None:
        """Assert ``state(...)`` (sync or async) equals ``expected`` after one and after two deliveries."""
        envelopes = envelopes_for(self.events, self.stream)
        kind = kind_of(self.projection) or "event"  # without a handler, handle() is called and raises
        database = _SpecDatabase()
        checkpoints, parking = SQLCheckpointStore(database), SQLParkingLot(database)  # never written by a spec
        delivery = delivery_for(self.projection, kind, "spec", checkpoints, parking, database)
        # With an OpenTelemetry SDK each delivery is a batch span, as under a runner (docs/observability.md).
        telemetry = current_telemetry()
        name = getattr(self.projection, "name", None)
        probe = None if telemetry is None else telemetry.projection(name if isinstance(name, str) else "spec")
        checkpoint = envelopes[-1].position if envelopes else 0

        async def deliver(*tx: Transaction) -> None:
            if probe is None:
                await delivery.handle(envelopes, *tx)
            else:
                with probe.batch(envelopes, checkpoint):
                    await delivery.handle(envelopes, *tx)

        try:
            if isinstance(delivery, TransactionalDelivery):
                await delivery.setup(database.tx)
                await deliver(database.tx)
                _check(expected, await _call(state, self.projection, database.tx), "after handling the events")
                return
            for label in ("after handling the events", "after the events were delivered again"):
                await deliver()
                _check(expected, await _call(state, self.projection), label)
        finally:
            database.tx.connection.close()


async def _call(state: Callable[..., object], *args: object) -> object:
    value = state(*args)
    if isinstance(value, Awaitable):
        value = await value
    return value


def _check(expected: object, actual: object, when: str) -> None:
    if actual != expected:
        raise AssertionError(f"{when}: expected\n  {expected!r}\nbut the projection holds\n  {actual!r}")


@dataclass(frozen=True, slots=True)
class SagaSpec(Generic[E, C]):
    """``SagaSpec(saga).given(event).then([commands])`` / ``.then_nothing()``."""

    saga: _Reacts[E, C]
    event: Any = None  # the event given(); None until then

    def given(self, event: E) -> SagaSpec[E, C]:
        """The triggering event."""
        return replace(self, event=event)

    def then(self, commands: Iterable[C]) -> None:
        """Assert the saga reacts with exactly ``commands``, in order."""
        expected, actual = list(commands), list(self.saga.react(self.event))
        if actual != expected:
            raise AssertionError(f"expected commands\n  {expected!r}\nbut the saga issued\n  {actual!r}")

    def then_nothing(self) -> None:
        """Assert the saga ignores the event."""
        self.then([])
