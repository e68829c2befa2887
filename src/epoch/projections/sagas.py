"""Process managers: a :class:`~epoch.Saga` turns events into commands; :class:`SagaRunner` sends them.

The runner is a projection: it reads the log from its checkpoint, asks ``saga.react(event)`` for
commands, and executes each through the ``CommandHandler`` that ``route(command)`` names. Every command
carries ids taken from the triggering event:

- ``command_id`` = ``uuid5(event.id, f"{saga name}/{index}")``, so a redelivered event (after a crash
  between the command and the checkpoint) executes nothing twice: the handler returns the first result;
- ``causation_id`` = the event's id, ``correlation_id`` = the event's correlation id (or its id).

A command that ``decide`` rejects is a failure like any other: retried, then the saga's ``policy``
(``"stop"`` or ``"park"``) applies. Return no command to ignore an event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from epoch._idempotency import command_id_for
from epoch.commands import CommandHandler
from epoch.projections._worker import Retry
from epoch.projections.checkpoints import CheckpointStore
from epoch.projections.parking import ParkingLot
from epoch.projections.projection import EventDecoder, FailurePolicy
from epoch.projections.runner import ProjectionRunner
from epoch.projections.status import ProjectionStatus
from epoch.records import EventEnvelope
from epoch.stores import EventStore
from epoch.telemetry import current as current_telemetry

__all__ = ["Route", "SagaProjection", "SagaRunner", "command_id_for"]

C = TypeVar("C")
E = TypeVar("E")
C_co = TypeVar("C_co", covariant=True)
E_contra = TypeVar("E_contra", contravariant=True)

Route = Callable[[C], tuple[CommandHandler[Any, Any, Any], object]]
"""Where a command goes: ``route(command) -> (handler, entity id)``."""


class _Reacts(Protocol[E_contra, C_co]):
    def react(self, event: E_contra) -> Iterable[C_co]: ...


class SagaProjection(Generic[E, C]):
    """A saga as a projection (at-least-once delivery, exactly-once command effects)."""

    def __init__(
        self,
        name: str,
        saga: _Reacts[E, C],
        route: Route[C],
        *,
        categories: str | Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        policy: FailurePolicy = "stop",
    ) -> None:
        self.name = name
        self.saga = saga
        self.route = route
        self.categories = categories
        self.event_types = None if event_types is None else tuple(event_types)
        self.policy = policy
        self._telemetry = current_telemetry()  # None without an OpenTelemetry SDK: nothing is recorded

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if self._telemetry is None:
            await self._react(envelope)
        else:
            with self._telemetry.react(self.name, envelope):
                await self._react(envelope)

    async def _react(self, envelope: EventEnvelope[Any]) -> None:
        correlation = envelope.correlation_id or str(envelope.id)
        for index, command in enumerate(self.saga.react(envelope.data)):
            handler, id = self.route(command)
            await handler.execute(
                id,
                command,
                command_id=command_id_for(envelope.id, self.name, index),
                causation_id=str(envelope.id),
                correlation_id=correlation,
            )


class SagaRunner(Generic[E, C]):
    """Runs one saga as a process manager with its own checkpoint (named ``name``).

    ``run()`` follows the log forever, ``run_until_idle()`` catches up and returns; ``status()`` and
    ``replay_parked()`` work as on :class:`ProjectionRunner`. Use it as an async context manager with
    ``start()`` to run it in the background.
    """

    def __init__(
        self,
        store: EventStore,
        codec: EventDecoder,
        saga: _Reacts[E, C],
        route: Route[C],
        *,
        name: str,
        categories: str | Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        policy: FailurePolicy = "stop",
        checkpoints: CheckpointStore | None = None,
        parking: ParkingLot | None = None,
        batch_size: int = 64,
        retry: Retry | None = None,
    ) -> None:
        self.projection = SagaProjection(
            name, saga, route, categories=categories, event_types=event_types, policy=policy
        )
        self.runner = ProjectionRunner(
            store, codec, [self.projection], checkpoints, parking=parking, batch_size=batch_size, retry=retry
        )

    @property
    def name(self) -> str:
        """The saga's name (its checkpoint's name)."""
        return self.projection.name

    async def run(self) -> None:
        """Catch up, then follow live events until cancelled."""
        await self.runner.run()

    async def run_until_idle(self) -> None:
        """Catch up to the head and return."""
        await self.runner.run_until_idle()

    async def replay_parked(self) -> int:
        """Retry the parked events; returns how many succeeded."""
        return await self.runner.replay_parked(self.name)

    async def status(self) -> ProjectionStatus:
        """Checkpoint, lag, throughput and failures of the saga."""
        [status] = await self.runner.status()
        return status

    def start(self) -> Any:
        """Run in the background until the ``async with`` block ends."""
        return self.runner.start()

    async def __aenter__(self) -> SagaRunner[E, C]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.stop()
