"""One projection's loop: read a batch, decode what it wants, handle it, save the checkpoint.

Failures: a batch that fails is retried with jittered exponential backoff; if it still fails, its events
are retried one by one, so the event at fault is found and given to the projection's policy (``stop``:
mark failing and raise :class:`ProjectionFailed`; ``park``: park it and move on). Decode errors are not
retried. Cancelling at any await leaves the checkpoint at a batch boundary: exactly-once projections
roll their transaction back, the others see the batch again (at least once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from epoch import _backoff as backoff
from epoch.errors import DecodeError, StoreUnavailable
from epoch.personal import keys_of_codec, subjects_in
from epoch.projections._delivery import CheckpointMoved, delivery_for
from epoch.projections._failures import cancelling, describe
from epoch.projections.checkpoints import CheckpointStore, transactional_checkpoints
from epoch.projections.parking import ParkingLot, parked_now, transactional_parking
from epoch.projections.projection import EventDecoder, ProjectionFailed, ProjectionSettings
from epoch.records import RecordedEvent
from epoch.stores import EventStore, SQLStore
from epoch.telemetry import current as current_telemetry

__all__ = ["Retry", "Worker"]

log = logging.getLogger("epoch.projections")

# Events that are all filtered out move the checkpoint in memory; it is written at most this often.
_IDLE_SAVE_SECONDS = 1.0
_RATE_WINDOW_SECONDS = 10.0


class Retry:
    """Retry settings: ``retries`` more attempts after the first, sleeping ``backoff`` doubling to ``max_backoff``."""

    def __init__(self, retries: int = 3, backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff


class Worker:
    def __init__(
        self,
        projection: Any,
        settings: ProjectionSettings,
        store: EventStore,
        codec: EventDecoder,
        checkpoints: CheckpointStore,
        parking: ParkingLot,
        database: SQLStore | None,
        retry: Retry,
        batch_size: int,
    ) -> None:
        self.projection = projection
        self.settings = settings
        self.name = settings.name
        telemetry = current_telemetry()  # None without an OpenTelemetry SDK: nothing is recorded
        self.probe = None if telemetry is None else telemetry.projection(settings.name)
        self.store = store
        self.codec = codec
        self._keys = keys_of_codec(codec)  # personal data: a batch's keys are preloaded before decoding
        self.checkpoints = checkpoints
        self.parking = parking
        self.database = database
        self.delivery = delivery_for(projection, settings.kind, settings.name, checkpoints, parking, database)
        self.retry = retry
        self.batch_size = batch_size
        self.position = 0
        self._saved = 0
        self._saved_at = time.monotonic()
        self._rate = 0.0
        self._window: deque[tuple[float, int]] = deque()
        self._started = False
        self.failure: ProjectionFailed | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        # Tables in the store's database first: writes inside a transaction (exactly once) expect them.
        if (checkpoints := transactional_checkpoints(self.checkpoints)) is not None:
            await checkpoints.ensure_table()
        if (parking := transactional_parking(self.parking)) is not None:
            await parking.ensure_table()
        await self.delivery.setup()
        self.position = self._saved = await self.checkpoints.load(self.name)
        self._started = True

    def mark_stale(self) -> None:
        """Make the next :meth:`start` run again and reload the checkpoint (after a lost connection the
        last batch may not have committed)."""
        self._started = False

    async def catch_up(self, on_batch: Callable[[int], None] | None = None) -> None:
        """Process pages of ``read_all`` until a page comes back short (the head was reached)."""
        await self.start()
        while True:
            page = [
                r
                async for r in self.store.read_all(
                    after=self.position, limit=self.batch_size, categories=self.settings.categories
                )
            ]
            if page:
                await self.process(page)
                if on_batch is not None:
                    on_batch(len(page))
            if len(page) < self.batch_size:
                await self.flush()
                return

    async def follow(self) -> None:
        """Process live events from ``subscribe``; whatever arrived meanwhile forms the next batch."""
        await self.start()
        queue: asyncio.Queue[RecordedEvent] = asyncio.Queue(maxsize=self.batch_size)
        subscription = self.store.subscribe(after=self.position, categories=self.settings.categories)

        async def pump() -> None:
            async for recorded in subscription:
                await queue.put(recorded)

        pump_task = asyncio.create_task(pump(), name=f"epoch-subscription-{self.name}")
        getter: asyncio.Future[RecordedEvent] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, pump_task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    pump_task.result()
                    raise RuntimeError("the subscription ended")
                batch = [getter.result()]
                while len(batch) < self.batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                await self.process(batch)
                if queue.empty():
                    await self.flush()
        finally:
            if getter is not None:
                getter.cancel()
            pump_task.cancel()
            pending: set[asyncio.Future[Any]] = {pump_task}
            if getter is not None:
                pending.add(getter)
            await asyncio.wait(pending)
            if not pump_task.cancelled():
                pump_task.exception()
            aclose = getattr(subscription, "aclose", None)
            if aclose is not None:
                with suppress(Exception):
                    await aclose()

    async def flush(self) -> None:
        """Write a checkpoint that moved only past filtered-out events."""
        if self.position != self._saved:
            await self.delivery.advance(self._saved, self.position, self._rate)
            self._saved = self.position

    # --- one batch ----------------------------------------------------------------------------

    async def process(self, batch: list[RecordedEvent]) -> None:
        wanted = [r for r in batch if self.settings.wants(r)]
        last = batch[-1].position
        if not wanted:
            self.position = last
            if time.monotonic() - self._saved_at > _IDLE_SAVE_SECONDS:
                await self.flush()
            return
        error = await self._attempt(lambda: self.apply(wanted, last))
        if error is None:
            return
        for recorded in wanted:
            single = error if len(wanted) == 1 else await self._attempt(self._single(recorded))
            if single is not None:
                await self._give_up(recorded, single)
        self.position = max(self.position, last)
        await self.flush()

    def _single(self, recorded: RecordedEvent) -> Callable[[], Awaitable[None]]:
        return lambda: self.apply([recorded], recorded.position)

    async def apply(self, records: list[RecordedEvent], checkpoint: int) -> None:
        if self._keys is not None:
            await self._keys.preload(subjects_in(records))
        envelopes = [e for e in map(self.codec.decode, records) if self.settings.keeps(e)]
        started = time.monotonic()
        if self.probe is None:
            await self.delivery.apply(envelopes, checkpoint, lambda: self._measure(len(records), started), self._saved)
        else:
            with self.probe.batch(envelopes, checkpoint):
                await self.delivery.apply(
                    envelopes, checkpoint, lambda: self._measure(len(records), started), self._saved
                )
        self.position = self._saved = checkpoint
        self._saved_at = time.monotonic()
        if self.probe is not None:
            await self.probe.measure_lag(self.store, checkpoint)

    def _measure(self, count: int, started: float) -> float:
        # Events per wall-clock second over the last ~10 s of batches: what `projections status` shows.
        now = time.monotonic()
        self._window.append((started, count))
        while self._window and self._window[0][0] < now - _RATE_WINDOW_SECONDS:
            self._window.popleft()
        total = sum(n for _, n in self._window)
        self._rate = round(total / max(now - self._window[0][0], 1e-3), 1) if self._window else 0.0
        return self._rate

    async def _attempt(self, action: Callable[[], Awaitable[None]]) -> BaseException | None:
        for attempt in range(self.retry.retries + 1):
            try:
                await action()
            except (StoreUnavailable, CheckpointMoved):
                # The store, not the event: no attempt of the event's, nothing to park. The runner waits
                # ``reconnect_delay`` and goes on from the last checkpoint (a live run), or raises; or
                # another runner applied these events: the runner goes on from its checkpoint.
                raise
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and cancelling():
                    raise  # the runner itself is being cancelled
                # Else a CancelledError is the handler's own (a task it awaited was cancelled): a failure.
                log.warning("projection %r: attempt %d failed: %r", self.name, attempt + 1, exc)
                await self._mark_failing(describe(exc), logging.WARNING)
                if isinstance(exc, DecodeError) or attempt == self.retry.retries:
                    return exc
                await asyncio.sleep(backoff.delay(attempt, self.retry.backoff, self.retry.max_backoff))
            else:
                return None
        raise AssertionError("unreachable")

    async def _give_up(self, recorded: RecordedEvent, error: BaseException) -> None:
        message = describe(error)
        if self.settings.policy == "stop":
            await self._mark_failing(message, logging.ERROR)
            self.failure = ProjectionFailed(self.name, recorded.position, recorded.stream, recorded.version, message)
            raise self.failure from error
        log.error("projection %r: parking %s version %d: %s", self.name, recorded.stream, recorded.version, message)
        await self.delivery.park(parked_now(self.name, recorded, error), self._rate, self._saved)
        self.position = self._saved = recorded.position

    async def _mark_failing(self, message: str, level: int) -> None:
        # Recording the failure is best effort: the projection stops (or retries) all the same, and
        # ``failures``/``ProjectionFailed`` report it in this process; only other processes' ``status``
        # miss it, so the refusal is logged (ERROR when the projection stops on it).
        try:
            await self.checkpoints.mark_failing(self.name, message)
        except Exception as exc:
            log.log(level, "projection %r: could not record it as failing: %r", self.name, exc)

    # --- maintenance --------------------------------------------------------------------------

    async def reset(self) -> None:
        """Clear the read model (the projection's ``reset``), the checkpoint and parked events."""
        if getattr(self.projection, "reset", None) is None:
            raise ProjectionFailed(self.name, 0, "", 0, "cannot rebuild: the projection has no reset()")
        await self.start()
        await self.delivery.reset()  # exactly once: the parked events go in the same transaction
        self.position = self._saved = 0
        self._rate = 0.0

    async def replay(self, entry_event: RecordedEvent) -> BaseException | None:
        """Handle a parked event again; on success drop it from the parking lot (atomically if exactly-once)."""
        if self._keys is not None:
            await self._keys.preload(subjects_in([entry_event]))
        return await self.delivery.replay(entry_event, self.codec)
