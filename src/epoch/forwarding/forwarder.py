"""``Forwarder``: a projection whose handler publishes each event to a broker through a :class:`Sink`.

Delivery is at least once and ordered per stream: the events of one batch are grouped by stream, each
group is published one event after the other (every publish awaits the broker's acknowledgement), and
the checkpoint moves only after the whole batch was acknowledged. After a crash the forwarder publishes
again from its checkpoint, so a broker that deduplicates by message id (NATS JetStream with
``Nats-Msg-Id``) stores each event once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

import msgspec

from epoch import _backoff
from epoch.errors import EpochError
from epoch.projections import CheckpointStore, ProjectionRunner, Retry
from epoch.records import EventEnvelope, RecordedEvent
from epoch.stores import EventStore

__all__ = ["Forwarder", "Message", "Sink", "Unpublishable"]

log = logging.getLogger("epoch.forwarding")


@dataclass(frozen=True, slots=True)
class Message:
    """One event as a sink publishes it: the stored bytes and where the event is in the store."""

    id: UUID
    stream: str
    category: str
    version: int
    position: int
    type: str
    data: bytes
    metadata: dict[str, Any]
    recorded_at: datetime


class Unpublishable(EpochError):
    """The broker can never take this message (it is larger than the broker accepts, say).

    A :class:`Sink` raises it for what retrying cannot fix; the forwarder does not retry it, and stops
    at the event at once (:class:`~epoch.ProjectionFailed`, its checkpoint before the batch).
    """

    def __init__(self, stream: str, version: int, position: int, reason: str) -> None:
        super().__init__(stream, version, position, reason)
        self.stream = stream
        self.version = version
        self.position = position
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.stream} version {self.version} (position {self.position}): {self.reason}"


class Sink(Protocol):
    """Where a :class:`Forwarder` publishes events.

    ``publish`` returns once the broker has durably accepted the message and raises otherwise
    (:class:`Unpublishable` for a message it can never take: that one is not retried). The forwarder
    publishes the events of one stream one at a time, in version order, and may publish an event again
    after a failure or a restart (at least once), always with the same ``message.id``.
    """

    async def publish(self, message: Message) -> None: ...


class _Bytes:
    """The forwarder's decoder: an envelope whose ``data`` is the stored bytes, decoded by nobody."""

    def decode(self, recorded: RecordedEvent) -> EventEnvelope[bytes]:
        metadata: dict[str, Any] = msgspec.json.decode(recorded.metadata) if recorded.metadata else {}
        return EventEnvelope(
            stream=recorded.stream,
            version=recorded.version,
            position=recorded.position,
            id=recorded.id,
            type=recorded.type,
            data=recorded.data,
            metadata=metadata,
            recorded_at=recorded.recorded_at,
            tags=recorded.tags,
        )


def _message(envelope: EventEnvelope[bytes]) -> Message:
    return Message(
        id=envelope.id,
        stream=envelope.stream,
        category=envelope.category,
        version=envelope.version,
        position=envelope.position,
        type=envelope.type,
        data=envelope.data,
        metadata=envelope.metadata,
        recorded_at=envelope.recorded_at,
    )


class Forwarder:
    """Publishes the store's events to ``sink`` from a checkpoint named ``name``.

    ``categories``/``event_types`` select what is forwarded (others are skipped without being read
    twice). The checkpoint lives where projections keep theirs (the store's own database by default;
    pass ``checkpoints`` to keep it elsewhere), so a restarted forwarder resumes after the last batch
    the broker acknowledged.

    A failed publish is retried with jittered exponential backoff (``first_backoff`` doubling to
    ``max_backoff``) for up to ``retry_for`` seconds, so a broker restart only delays forwarding; after
    that the batch fails and the forwarder stops with :class:`~epoch.ProjectionFailed`, its checkpoint
    before the batch (it never skips an event). A message the sink says it can never publish
    (:class:`Unpublishable`) stops it at once. ``concurrency`` bounds how many streams of one batch are
    published at once.

    Use ``run()`` (forever), ``run_until_idle()`` (up to the head), or ``async with forwarder:`` which
    runs it in the background until the block ends.
    """

    def __init__(
        self,
        store: EventStore,
        sink: Sink,
        *,
        name: str = "forwarder",
        categories: str | Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        checkpoints: CheckpointStore | None = None,
        batch_size: int = 256,
        concurrency: int = 16,
        retry_for: float = 300.0,
        first_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.store = store
        self.sink = sink
        self.name = name
        self.categories = categories if categories is None or isinstance(categories, str) else tuple(categories)
        self.event_types = None if event_types is None else tuple(event_types)
        self.retry_for = retry_for
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._slots = asyncio.Semaphore(concurrency)
        # The runner's own retry would publish the whole batch again; publish already retried for
        # retry_for seconds, so one more pass is enough before the failure is reported.
        self.runner = ProjectionRunner(
            store, _Bytes(), [self], checkpoints, batch_size=batch_size, retry=Retry(retries=0)
        )

    async def handle_batch(self, envelopes: Sequence[EventEnvelope[bytes]]) -> None:
        """Publish a batch: per stream in version order, streams side by side; return when all are acked."""
        groups: dict[str, list[Message]] = {}
        for envelope in envelopes:
            groups.setdefault(envelope.stream, []).append(_message(envelope))
        tasks = [asyncio.ensure_future(self._publish_in_order(m)) for m in groups.values()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if (error := task.exception()) is not None:
                    raise error  # the first failure as itself, not inside an ExceptionGroup
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:
                if not task.cancelled():
                    task.exception()  # retrieved, so asyncio does not log it as never retrieved

    async def _publish_in_order(self, messages: list[Message]) -> None:
        async with self._slots:
            for message in messages:
                await self._publish(message)

    async def _publish(self, message: Message) -> None:
        deadline = time.monotonic() + self.retry_for
        backoff = _backoff.Backoff(self.first_backoff, self.max_backoff)
        while True:
            try:
                await self.sink.publish(message)
                return
            except Unpublishable:
                raise
            except Exception as exc:
                wait = backoff.next()
                if time.monotonic() + wait > deadline:
                    raise
                log.warning(
                    "forwarder %r: publishing %s version %d failed (%s); retrying in %.2fs",
                    self.name,
                    message.stream,
                    message.version,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)

    async def run(self) -> None:
        """Forward from the checkpoint, then follow live events, until cancelled."""
        await self.runner.run()

    async def run_until_idle(self) -> None:
        """Forward every event up to the head, then return."""
        await self.runner.run_until_idle()

    async def position(self) -> int:
        """The checkpoint: the position of the last event the broker acknowledged in a whole batch."""
        return await self.runner.checkpoints.load(self.name)

    async def __aenter__(self) -> Forwarder:
        self.runner.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.runner.stop()
