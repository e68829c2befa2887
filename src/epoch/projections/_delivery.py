"""How each kind of projection is handed its events, and how its progress is recorded with them.

:func:`delivery_for` is the one place that switches on the kind (:func:`~epoch.projections.projection.kind_of`):

- :class:`EventDelivery` — ``handle(envelope)`` for each event, then the checkpoint: at least once;
- :class:`BatchDelivery` — ``handle_batch(envelopes)`` once per batch, then the checkpoint: at least once;
- :class:`TransactionalDelivery` — ``handle_in_transaction(envelope, tx)`` for each event in one
  transaction of the store's database that also saves the checkpoint (or parks, resets, unparks): exactly
  once.

The runner's worker uses all of it; scale-out and ``ProjectionSpec`` use :meth:`Delivery.setup` and
:meth:`Delivery.handle` inside transactions of their own.
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from epoch.errors import ConfigurationError
from epoch.projections._failures import cancelling
from epoch.projections.checkpoints import CheckpointStore, transactional_checkpoints
from epoch.projections.parking import ParkedEvent, ParkingLot, parked_now, transactional_parking
from epoch.projections.projection import EventDecoder, ProjectionKind
from epoch.records import EventEnvelope, RecordedEvent
from epoch.stores import SQLStore, Transaction

__all__ = ["BatchDelivery", "CheckpointMoved", "Delivery", "EventDelivery", "TransactionalDelivery", "delivery_for"]


class Delivery(ABC):
    """One projection's handler and its checkpoint ``name`` in ``checkpoints`` (parked events in ``parking``).

    The methods here deliver at least once: the projection handles, then the checkpoint is saved, so a
    crash in between hands the batch over again.
    """

    def __init__(self, projection: Any, name: str, checkpoints: CheckpointStore, parking: ParkingLot) -> None:
        self.projection = projection
        self.name = name
        self.checkpoints = checkpoints
        self.parking = parking

    @abstractmethod
    async def handle(self, envelopes: Sequence[EventEnvelope[Any]], tx: Transaction | None = None) -> None:
        """Hand ``envelopes`` (in position order) to the projection.

        ``tx`` is the transaction the caller commits the checkpoint in; only exactly-once projections
        write in it (and need it).
        """

    async def setup(self, tx: Transaction | None = None) -> None:
        """Run the projection's optional ``setup()`` (once, before its first batch)."""
        if (setup := getattr(self.projection, "setup", None)) is not None:
            await _hook(setup())

    async def apply(
        self, envelopes: Sequence[EventEnvelope[Any]], checkpoint: int, rate: Callable[[], float], since: int = 0
    ) -> None:
        """Handle ``envelopes``, then save ``checkpoint`` with the throughput ``rate()`` measured after them
        (``since``: the checkpoint the runner holds, which only an exactly-once projection checks)."""
        await self.handle(envelopes)
        await _finish(self.checkpoints.save(self.name, checkpoint, rate()))

    async def park(self, entry: ParkedEvent, rate: float, since: int = 0) -> None:
        """Park ``entry`` and move the checkpoint to its event."""
        await self.parking.park(entry)
        await self.checkpoints.save(self.name, entry.event.position, rate)

    async def advance(self, since: int, position: int, rate: float) -> None:
        """Move the checkpoint past events the projection does not want."""
        await self.checkpoints.save(self.name, position, rate)

    async def reset(self) -> None:
        """Clear the read model (the projection's ``reset()``), forget the checkpoint, then the parked events
        (in that order: a reset that fails keeps them; the log's replay handles them again anyway)."""
        await _hook(self.projection.reset())
        await self.checkpoints.delete(self.name)
        await self.parking.clear(self.name)

    async def replay(self, recorded: RecordedEvent, codec: EventDecoder) -> BaseException | None:
        """Handle a parked event again and drop it from the parking lot; when it fails again, park it with
        the new error and return that error."""
        try:
            await self.handle([codec.decode(recorded)])
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and cancelling():
                raise
            await self.parking.park(parked_now(self.name, recorded, exc))
            return exc
        await self.parking.remove(self.name, recorded.position)
        return None


class EventDelivery(Delivery):
    """``handle(envelope)``, one event at a time."""

    async def handle(self, envelopes: Sequence[EventEnvelope[Any]], tx: Transaction | None = None) -> None:
        for envelope in envelopes:
            await self.projection.handle(envelope)


class BatchDelivery(Delivery):
    """``handle_batch(envelopes)``, the whole batch in one call (never an empty one)."""

    async def handle(self, envelopes: Sequence[EventEnvelope[Any]], tx: Transaction | None = None) -> None:
        if envelopes:
            await self.projection.handle_batch(envelopes)


class TransactionalDelivery(Delivery):
    """``handle_in_transaction(envelope, tx)``: every write of a batch, its checkpoint and any parked
    entry commit in one transaction of the store's database, or none of them do.

    Raises :class:`~epoch.errors.ConfigurationError` without that database, or when the checkpoints or
    the parking lot cannot join its transactions.
    """

    def __init__(
        self,
        projection: Any,
        name: str,
        checkpoints: CheckpointStore,
        parking: ParkingLot,
        database: SQLStore | None,
    ) -> None:
        super().__init__(projection, name, checkpoints, parking)
        if database is None:
            raise ConfigurationError(
                f"projection {name!r} writes in the store's transaction (handle_in_transaction): "
                "it needs a SQLite or PostgreSQL store"
            )
        checkpoints_in, parking_in = transactional_checkpoints(checkpoints), transactional_parking(parking)
        if checkpoints_in is None or parking_in is None:
            raise ConfigurationError(
                f"projection {name!r} is exactly-once: its checkpoints and parked events must live in the "
                "store's database (use the default checkpoints and parking)"
            )
        self.database = database
        self.checkpoints_in = checkpoints_in
        self.parking_in = parking_in

    async def handle(self, envelopes: Sequence[EventEnvelope[Any]], tx: Transaction | None = None) -> None:
        if tx is None:
            raise TypeError("an exactly-once projection handles events inside a transaction")
        for envelope in envelopes:
            await self.projection.handle_in_transaction(envelope, tx)

    async def setup(self, tx: Transaction | None = None) -> None:
        """Run the projection's optional ``setup(tx)`` in ``tx``, or in a transaction of its own."""
        if (setup := getattr(self.projection, "setup", None)) is None:
            return
        if tx is not None:
            await _hook(setup(tx))
            return
        async with self.database.transaction() as own:
            await _hook(setup(own))

    async def apply(
        self, envelopes: Sequence[EventEnvelope[Any]], checkpoint: int, rate: Callable[[], float], since: int = 0
    ) -> None:
        async with self.database.transaction() as tx:
            # The checkpoint first: of two runners of this projection, the one that finds it moved past
            # ``since`` (the other applied these events) rolls back, so each event is applied once.
            await self._advance(tx, since, checkpoint, rate)
            await self.handle(envelopes, tx)

    async def park(self, entry: ParkedEvent, rate: float, since: int = 0) -> None:
        async with self.database.transaction() as tx:
            await self._advance(tx, since, entry.event.position, lambda: rate)
            await self.parking_in.park_in(tx, entry)

    async def advance(self, since: int, position: int, rate: float) -> None:
        """Move the checkpoint past events the projection does not want (see :meth:`apply`)."""
        async with self.database.transaction() as tx:
            await self._advance(tx, since, position, lambda: rate)

    async def _advance(self, tx: Transaction, since: int, position: int, rate: Callable[[], float]) -> None:
        if not await self.checkpoints_in.advance_in(tx, self.name, since, position, rate()):
            raise CheckpointMoved(self.name, since)

    async def reset(self) -> None:
        async with self.database.transaction() as tx:  # all or nothing: a failed reset keeps the parked events
            await _hook(self.projection.reset(tx))
            await self.checkpoints_in.delete_in(tx, self.name)
            await self.parking_in.clear_in(tx, self.name)

    async def replay(self, recorded: RecordedEvent, codec: EventDecoder) -> BaseException | None:
        """Handle a parked event again and drop it from the parking lot in the same transaction; when it
        fails again, park it with the new error and return that error."""
        try:
            envelope = codec.decode(recorded)
            async with self.database.transaction() as tx:
                # The entry first: of two replays of one entry, the one that finds it gone rolls back.
                if not await self.parking_in.remove_in(tx, self.name, recorded.position):
                    raise _Replayed
                await self.handle([envelope], tx)
        except _Replayed as gone:
            return gone  # another replay applied it, in its own transaction: not this one's to count
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and cancelling():
                raise
            await self.parking.park(parked_now(self.name, recorded, exc))
            return exc
        return None


class CheckpointMoved(Exception):
    """Another runner of an exactly-once projection moved its checkpoint past where this one stood: this
    runner's transaction rolls back, and it goes on from the checkpoint as stored."""

    def __init__(self, name: str, since: int) -> None:
        super().__init__(f"projection {name!r}: the checkpoint moved past {since}: another runner applied those events")


class _Replayed(Exception):
    """A parked entry another replay removed (and applied) first: this one rolls back."""


def delivery_for(
    projection: object,
    kind: ProjectionKind,
    name: str,
    checkpoints: CheckpointStore,
    parking: ParkingLot,
    database: SQLStore | None,
) -> Delivery:
    """The delivery for a projection of ``kind``: the one switch on the kind."""
    match kind:
        case "event":
            return EventDelivery(projection, name, checkpoints, parking)
        case "batch":
            return BatchDelivery(projection, name, checkpoints, parking)
        case "transactional":
            return TransactionalDelivery(projection, name, checkpoints, parking, database)


async def _finish(save: Awaitable[None]) -> None:
    """Await a checkpoint save that a cancellation (a runner being stopped) does not cut short.

    The events are handled already: a stop that lands during the save lets it complete, so a stopped
    runner's checkpoint covers everything its projection saw (no redelivery after a clean stop).
    """
    task = asyncio.ensure_future(save)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _hook(result: object) -> None:
    """Finish an optional hook's call (``setup``, ``reset``): a plain ``def`` has run already, an
    ``async def`` (or anything returning an awaitable) is awaited."""
    if inspect.isawaitable(result):
        await result
