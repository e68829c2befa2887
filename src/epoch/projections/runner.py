"""``ProjectionRunner``: feeds the ordered log to projections, each from its own checkpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any

from epoch.errors import ConfigurationError, StoreUnavailable
from epoch.projections._delivery import CheckpointMoved
from epoch.projections._worker import Retry, Worker
from epoch.projections.checkpoints import CheckpointStore, default_checkpoints
from epoch.projections.parking import ParkingLot, default_parking
from epoch.projections.projection import EventDecoder, ProjectionFailed, settings_of
from epoch.projections.status import ProjectionStatus, projection_status
from epoch.stores import EventStore, sql_store

__all__ = ["ProjectionRunner", "Retry"]

log = logging.getLogger("epoch.projections")


async def _run_all(coroutines: dict[str, Coroutine[Any, Any, None]]) -> None:
    # Like a TaskGroup, but the first error is raised as itself rather than inside an ExceptionGroup.
    # A task that ends cancelled though this one was not (a stray CancelledError) is an error too, not a
    # quiet end: `asyncio.wait(FIRST_EXCEPTION)` would count it as done and wait on for the others.
    tasks = [asyncio.create_task(c, name=name) for name, c in coroutines.items()]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    name = task.get_name()
                    raise RuntimeError(
                        f"projection {name!r} ended with a CancelledError, but the runner was not cancelled"
                    )
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()


class ProjectionRunner:
    """Runs projections over a store: catch up from each checkpoint, then follow live events.

    Each projection has its own checkpoint (by name) and its own task, so a slow or stopped projection
    does not hold the others back. Checkpoints and parked events live in the store's own database for
    SQLite and PostgreSQL (tables ``epoch_checkpoints`` and ``epoch_parked``), on the server for
    KurrentDB (``$epoch-checkpoint-<name>`` and ``$epoch-parked-<name>`` streams) and in memory
    otherwise; pass ``checkpoints``/``parking`` to keep them elsewhere. Projections with ``handle_in_transaction``
    need the store's database and get exactly-once processing; the others get at-least-once.

    Use ``async with ProjectionRunner(...) as runner:``; ``start()`` runs :meth:`run` in the background
    and leaving the block cancels it, leaving every checkpoint at a batch boundary.
    """

    def __init__(
        self,
        store: EventStore,
        codec: EventDecoder,
        projections: Iterable[object],
        checkpoints: CheckpointStore | None = None,
        *,
        parking: ParkingLot | None = None,
        batch_size: int = 256,
        retry: Retry | None = None,
        reconnect_delay: float = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, not {batch_size}")
        self.store = store
        self.codec = codec
        self.database = sql_store(store)
        self.checkpoints: CheckpointStore = checkpoints if checkpoints is not None else default_checkpoints(store)
        self.parking: ParkingLot = parking if parking is not None else default_parking(store)
        self.batch_size = batch_size
        self.retry = retry or Retry()
        self.reconnect_delay = reconnect_delay
        self._workers: dict[str, Worker] = {}
        for projection in projections:
            settings = settings_of(projection, codec)
            if settings.name in self._workers:
                raise ConfigurationError(f"two projections are named {settings.name!r}")
            self._workers[settings.name] = Worker(
                projection,
                settings,
                store,
                codec,
                self.checkpoints,
                self.parking,
                self.database,
                self.retry,
                batch_size,
            )
        self._task: asyncio.Task[None] | None = None

    @property
    def names(self) -> list[str]:
        """The projections' names, in the order given."""
        return list(self._workers)

    def projection(self, name: str) -> object:
        """The projection called ``name``; raises ``ConfigurationError`` naming the known ones if there is none."""
        return self._worker(name).projection

    def _worker(self, name: str) -> Worker:
        try:
            return self._workers[name]
        except KeyError:
            known = ", ".join(self._workers) or "none"
            raise ConfigurationError(f"no projection named {name!r} (known: {known})") from None

    @property
    def failures(self) -> dict[str, ProjectionFailed]:
        """Projections that stopped on a failing event, by name."""
        return {n: w.failure for n, w in self._workers.items() if w.failure is not None}

    # --- running ------------------------------------------------------------------------------

    async def run_until_idle(self) -> None:
        """Catch every projection up to the head, then return.

        Raises the first :class:`ProjectionFailed` once the other projections have caught up.
        """
        await _run_all({n: self._guarded(w, live=False) for n, w in self._workers.items()})
        self._raise_failure()

    async def run(self) -> None:
        """Catch up, then follow live events, until cancelled.

        A projection that stops (policy ``"stop"``) is marked failing and the others keep running; when
        all have stopped this raises the first failure. A lost store connection is retried after
        ``reconnect_delay`` seconds from the last checkpoint.
        """
        await _run_all({n: self._guarded(w, live=True) for n, w in self._workers.items()})
        self._raise_failure()

    def _raise_failure(self) -> None:
        failures = self.failures
        if failures:
            raise next(iter(failures.values()))

    async def _guarded(self, worker: Worker, live: bool) -> None:
        while True:
            try:
                await worker.catch_up()
                if not live:
                    return
                await worker.follow()
            except ProjectionFailed as exc:
                log.error("%s", exc)
                return
            except CheckpointMoved as exc:  # another runner of it applied these events: on from there
                log.info("%s", exc)
                worker.mark_stale()
            except StoreUnavailable as exc:
                if not live:
                    raise
                log.warning("projection %r: %s; retrying in %.1fs", worker.name, exc, self.reconnect_delay)
                await asyncio.sleep(self.reconnect_delay)
                worker.mark_stale()  # reload the checkpoint: the last batch may not have committed

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` in a background task owned by this runner (cancelled when the block exits)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="epoch-projection-runner")
        return self._task

    async def stop(self) -> None:
        """Cancel the background task from :meth:`start` and wait for it; checkpoints stay consistent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def __aenter__(self) -> ProjectionRunner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- maintenance --------------------------------------------------------------------------

    async def rebuild(self, name: str, on_progress: Callable[[int], None] | None = None) -> None:
        """Reset a projection (its ``reset``, checkpoint and parked events) and replay the log into it.

        ``on_progress(n)`` is called after each batch with the number of events read. Stop live runners
        of this projection first. Raises ``ConfigurationError`` if the projection has no ``reset`` (or there is
        no projection ``name``); ``reset`` may be a plain ``def`` or an ``async def``.
        """
        worker = self._worker(name)
        if getattr(worker.projection, "reset", None) is None:
            raise ConfigurationError(f"projection {name!r} cannot be rebuilt: it has no reset()")
        worker.failure = None
        await worker.reset()
        await worker.catch_up(on_progress)
        if worker.failure is not None:
            raise worker.failure

    async def replay_parked(self, name: str) -> int:
        """Hand a projection its parked events again, in position order; returns how many now succeeded.

        Events that fail again stay parked with the new error. Raises ``ConfigurationError`` for an unknown name.
        """
        worker = self._worker(name)
        await worker.start()
        replayed = 0
        for entry in await self.parking.list(name):
            if await worker.replay(entry.event) is None:
                replayed += 1
        return replayed

    async def status(self) -> list[ProjectionStatus]:
        """Each projection's checkpoint, the head, lag in events and seconds, events/s, failure, parked count."""
        return await projection_status(
            self.store,
            self.checkpoints,
            self.parking,
            {n: w.settings for n, w in self._workers.items()},
        )
