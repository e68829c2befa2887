"""Per-stream lanes: the commands a handler runs on one stream in one process never race each other.

The first command for an idle stream runs at once, alone, in its caller's task: the uncontended path
costs one dict entry and no task. Commands that arrive while it runs wait in the stream's queue; when it
ends (also when its caller is cancelled), one task takes them all and hands them to ``batch`` — the
handler decides them in sequence and appends them together — until the queue is empty. Each caller gets
its own result or error through its future; a caller cancelled while waiting is dropped from the queue,
or, once its batch is being appended, simply does not hear the result.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Lanes", "Waiting"]

J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")

MAX_BATCH = 64
"""The most commands one batch takes: a bound on one append's size and on the latency of its first."""


class Waiting(Generic[J, R]):
    """A queued job and the future its caller awaits."""

    __slots__ = ("future", "job")

    def __init__(self, job: J, future: asyncio.Future[R]) -> None:
        self.job = job
        self.future = future

    def settle(self, result: R | BaseException) -> None:
        """Give the caller its result or error, unless it stopped waiting (cancelled)."""
        if self.future.done():
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class _Lane(Generic[J, R]):
    __slots__ = ("loop", "queue", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[Waiting[J, R]] = deque()
        self.task: asyncio.Task[None] | None = None  # held here: the loop keeps only weak references


Batch = Callable[[str, list[Waiting[J, R]], Callable[[], None], T | None], Awaitable[T | None]]
"""``batch(stream, waiting, refill, carried)``: settle every job in ``waiting``. ``refill()`` moves the
jobs queued since into ``waiting`` (for a retry); what it returns is passed to the stream's next batch."""


class Lanes(Generic[J, R, T]):
    """One lane per stream that has a command running; a lane is removed when its queue runs dry."""

    def __init__(self, alone: Callable[[str, J], Awaitable[R]], batch: Batch[J, R, T]) -> None:
        self._alone = alone
        self._batch = batch
        self._lanes: dict[str, _Lane[J, R]] = {}

    async def run(self, stream: str, job: J) -> R:
        """Run ``job`` on ``stream``: alone if the stream is idle, else in the batch after the current one."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(stream)
        if lane is None or lane.loop is not loop:  # (a lane left by a loop that closed mid-batch is dead)
            lane = self._lanes[stream] = _Lane(loop)
            try:
                return await self._alone(stream, job)
            finally:
                if lane.queue:
                    lane.task = loop.create_task(self._drain(stream, lane))
                elif self._lanes.get(stream) is lane:
                    del self._lanes[stream]
        future: asyncio.Future[R] = loop.create_future()
        lane.queue.append(Waiting(job, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()  # settled as we were cancelled: nobody will read it, and that is fine
            raise

    def _take(self, lane: _Lane[J, R], into: list[Waiting[J, R]]) -> None:
        queue = lane.queue
        while queue and len(into) < MAX_BATCH:
            waiting = queue.popleft()
            if not waiting.future.done():  # its caller was cancelled: never decide it
                into.append(waiting)

    async def _drain(self, stream: str, lane: _Lane[J, R]) -> None:
        carried: T | None = None
        try:
            while True:
                waiting: list[Waiting[J, R]] = []
                self._take(lane, waiting)
                if not waiting:
                    # The callers just settled resume before this task does: one turn of the loop lets
                    # them queue their next commands, so a busy stream stays in batches.
                    await asyncio.sleep(0)
                    self._take(lane, waiting)
                    if not waiting:
                        return
                try:
                    carried = await self._batch(stream, waiting, functools.partial(self._take, lane, waiting), carried)
                except BaseException as exc:
                    for each in waiting:
                        if isinstance(exc, Exception):
                            each.settle(exc)
                        else:
                            each.future.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    carried = None
        finally:
            for each in lane.queue:  # only when this task itself is cancelled (the loop is closing)
                each.future.cancel()
            if self._lanes.get(stream) is lane:
                del self._lanes[stream]
