"""The threads the PostgreSQL store's blocking statements run in, and the one hand-off to them and back.

A call is queued with an asyncio future of the caller's loop; a free thread runs it (in the caller's
context, as ``asyncio.to_thread`` does) and resolves the future through ``call_soon_threadsafe``. That
is the whole round trip: no ``concurrent.futures`` future chained to the loop's, which costs about as
much again per call. Threads start when a call finds none free, up to ``size``; a call queued while all
are busy waits for one, so ``size`` must be at least the number of calls that may wait on each other
(the store sizes it to its connection budget, ``pool_max``). A thread idle for ``idle_exit`` seconds
ends, so a burst of calls does not keep its threads for the life of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Threads"]

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[[], Any]]


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile: nobody waits for the outcome
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


class Threads:
    """Up to ``size`` daemon threads running blocking calls for coroutines (:meth:`run`)."""

    def __init__(self, size: int, name: str, idle_exit: float = 60.0) -> None:
        self.size = size
        self.name = name
        self.idle_exit = idle_exit
        self._numbers = itertools.count(1)
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for a call
        self._started = 0
        self._lock = threading.Lock()
        self._stopped = False

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in one of the threads; its result or its exception, here."""
        if self._stopped:
            raise RuntimeError(f"{self.name}: the threads are stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, contextvars.copy_context(), call))
        if not self._idle.acquire(blocking=False):  # no thread is free: start one, if there is room
            self._start()
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._started >= self.size:
                return
            self._started += 1
            number = next(self._numbers)
        threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_exit)
            except queue.Empty:
                # Idle long enough. Its token taken back, no caller counts on this thread: it ends. No
                # token left means each is claimed by a call queued just now: serve on.
                if self._idle.acquire(blocking=False):
                    with self._lock:
                        self._started -= 1
                    return
                continue
            if item is None:
                return
            loop, future, context, call = item
            value: Any = None
            error: BaseException | None = None
            try:
                value = context.run(call)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            # Free before the caller hears back: its next call then finds this thread, rather than
            # starting another one (calls in sequence stay on one warm thread).
            self._idle.release()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the outcome
                loop.call_soon_threadsafe(_resolve, future, value, error)
            del item, loop, future, context, call, value, error  # hold nothing while idle

    def stop(self) -> None:
        """Let every thread end once the calls queued before have run (it does not wait for them)."""
        self._stopped = True
        with self._lock:
            started = self._started
        for _ in range(started):
            self._queue.put(None)
