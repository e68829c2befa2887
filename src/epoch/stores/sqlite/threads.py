"""The SQLite store's threads: one writer owning the only writing connection, a pool of readers each
owning a read-only one (WAL readers never wait for the writer), the job queues between the event loop and
them, and the subscribers waiting for the writer's next commit.

An append runs on the caller's thread, on the writer's connection (``here``): alone at once, or held
for a group commit at the end of the loop's turn. It is handed to the writer thread, and awaits a
future the writer settles, when the writer has work queued or its connection busy, or another process
holds the write lock. A small read (a point query, the first page of a read, at most ``INLINE_ROWS``
rows) runs on the caller's thread too (``here``), and so do the later pages, one per turn of the loop;
a reader thread only when reading here would wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

from epoch.errors import StoreUnavailable
from epoch.records import RecordedEvent
from epoch.stores.sqlite.bridge import wake, wake_all
from epoch.stores.sqlite.errors import epoch_error
from epoch.stores.sqlite.here import BUSY, Here, OnCallerThread
from epoch.stores.sqlite.schema import connect, create_schema
from epoch.stores.sqlite.work import Replay
from epoch.stores.sqlite.writer import EXCLUSIVE, READ, STORE_EXCLUSIVE, WRITE, Job, run_batch, run_read, settled_after

__all__ = ["INLINE_ROWS", "MAX_GROUP", "PAGE_SIZE", "POLL_INTERVAL", "Workers"]

T = TypeVar("T")

PAGE_SIZE = 1000  # rows per page of a long read (after its first, smaller one)
INLINE_ROWS = 100  # rows of a read's first page: measured ~0.15 ms (one row: ~10 us); most reads end there
MAX_GROUP = 256  # appends committed together, at most
POLL_INTERVAL = 0.1  # seconds between a subscriber's checks for other processes' commits


class Workers(OnCallerThread):
    """The threads of one store, started on first use and stopped by :meth:`close`.

    In memory there is one connection, so reads queue behind writes on the writer thread (``readers=0``).
    """

    def __init__(
        self, path: str, *, in_memory: bool, synchronous: str, timeout: float, readers: int, inline_writes: bool = True
    ) -> None:
        self.path = path
        self.inline_writes = inline_writes
        self.in_memory = in_memory
        self.synchronous = synchronous
        self.timeout = timeout
        self.readers = readers
        self._lock = threading.Lock()
        self._writes: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._reads = self._writes if in_memory else queue.SimpleQueue()
        self._started: concurrent.futures.Future[None] | None = None
        self._stopped: concurrent.futures.Future[None] | None = None
        self._ready = False
        self._closed = False
        self._commits = 0  # bumped by the writer after each commit; subscribers compare it
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        # Each caller thread's read-only connection for small reads. Weak: a thread that ends drops its
        # connection (closed when collected); close() closes those still alive.
        self._here = threading.local()
        self._here_connections: weakref.WeakSet[Here] = weakref.WeakSet()
        self._init_here()

    # -- the event loop's side ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the threads (once) and wait until the schema is ready; a failed start is retried next call."""
        if self._ready:
            return
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            if self._started is None:
                self._started = concurrent.futures.Future()
                self._stopped = concurrent.futures.Future()
                threading.Thread(
                    target=self._serve_writes,
                    args=(self._started, self._stopped),
                    name=f"epoch-sqlite-writer:{self.path}",
                    daemon=True,
                ).start()
            started = self._started
        await asyncio.wrap_future(started)
        if not self.in_memory and self._held().connection is None:
            self._connect_here()  # now, so that the first read does not pay for it

    def _submit(
        self,
        jobs: queue.SimpleQueue[Job | None],
        kind: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        stream: str | None = None,
    ) -> asyncio.Future[Any]:
        """Queue ``fn`` for a thread; the future gets its result (the caller knows its type)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            jobs.put(Job(kind, fn, args, stream, loop, future))
        return future

    async def write(self, fn: Callable[..., T | Replay], stream: str, *args: Any) -> T:
        """``fn(group, stream, *args)`` on the writer, in the next group commit (see ``work.Group``).

        A :class:`~epoch.stores.sqlite.work.Replay` it returns is answered with the first append's result.
        """
        await self.start()
        here = self._write_here(fn, stream, args)
        if here is None:
            here = self._submit(self._writes, WRITE, fn, (stream, *args), stream)
        elif here.done():  # it ran alone: yield once, so that a loop of appends lets others run
            await asyncio.sleep(0)
            return cast("T", here.result())
        return cast("T", await self._wait(here))

    async def exclusive(self, fn: Callable[[sqlite3.Connection], T], *, store_work: bool = False) -> T:
        """``fn(connection)`` on the writer, in a transaction of its own.

        ``fn`` is a caller's (its exceptions pass unchanged), or with ``store_work`` the store's own (its
        driver errors become epoch errors, as for every other call).
        """
        await self.start()
        future: asyncio.Future[T] = self._submit(self._writes, STORE_EXCLUSIVE if store_work else EXCLUSIVE, fn, ())
        return await self._wait(future)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)``, a point query: on this thread when it need not wait, else on a reader."""
        await self.start()
        result = self._read_here(fn, args)
        if result is not BUSY:
            return cast("T", result)
        future: asyncio.Future[T] = self._submit(self._reads, READ, fn, args)
        return await self._wait(future)

    async def _wait(self, future: asyncio.Future[T]) -> T:
        """``await future``, counted as this thread's work in flight while it waits (see ``_read_here``)."""
        held = self._held()
        held.waiting += 1
        try:
            return await future
        finally:
            held.waiting -= 1

    def _fetch(self, page: Callable[..., Any], cursor: Any, size: int, rows: int) -> tuple[asyncio.Future[Any], int]:
        """The next page (a future) and the rows asked for: at most ``rows`` on this thread, or ``size``
        on a reader when reading here would wait for a lock."""
        rows = min(size, rows)
        result = self._read_here(page, (cursor, rows), small=rows <= INLINE_ROWS)
        if result is not BUSY:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(result)
            return future, rows
        return self._submit(self._reads, READ, page, (cursor, size)), size

    async def close(self) -> None:
        """Finish queued work, stop the threads and close the connections; wake every waiter. Idempotent."""
        mine: Here | None = getattr(self._here, "held", None)
        while mine is not None and mine.pending:  # appends made before close: committed, not refused
            self._flush_here(mine)
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._started is not None:
                    self._writes.put(None)
            waiters, self._waiters = self._waiters, {}
            stopped = self._stopped
            here, self._here_connections = list(self._here_connections), weakref.WeakSet()
        for held in here:
            if held.connection is not None:
                held.connection.close()
        wake_all(waiters)
        if stopped is not None:
            await asyncio.wrap_future(stopped)

    async def scan(
        self,
        start: Callable[[], Any],
        page: Callable[[sqlite3.Connection, Any, int], tuple[Any, list[RecordedEvent]]],
        limit: int | None,
        follow: bool,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the events of successive pages, each read on this thread after the caller consumed the
        last one (a reader thread only when reading here would wait for a lock).

        ``start()`` checks the arguments (when iteration begins, as for any async generator) and returns
        the first cursor; ``page(connection, cursor, size)`` returns the next cursor and up to ``size``
        events. With ``follow``, a short page means "caught up": wait for a commit, then read on.
        """
        cursor = start()
        await self.start()
        if limit == 0:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            return
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
        seen = self._commits  # read before each query: a later commit may be missing from its result
        pending: asyncio.Future[tuple[Any, list[RecordedEvent]]] | None
        pending, asked = self._fetch(page, cursor, size, INLINE_ROWS)
        try:
            while pending is not None:
                cursor, events = await self._wait(pending)
                pending = None
                if limit is not None:
                    limit -= len(events)
                more = len(events) == asked and limit != 0
                for event in events:
                    yield event
                if more:
                    size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
                    seen = self._commits
                    # The next page on this thread too, after one turn of the loop: the loop is blocked
                    # for one page at a time (~1-2 ms for 1,000 rows), never for a whole long read.
                    await asyncio.sleep(0)
                    pending, asked = self._fetch(page, cursor, size, size)
                elif follow:
                    await self._wait_for_commit(seen)
                    seen = self._commits
                    pending, asked = self._fetch(page, cursor, size, INLINE_ROWS)
        finally:
            if pending is not None:
                pending.cancel()

    async def _wait_for_commit(self, seen: int) -> None:
        """Return after a commit by this store since ``seen`` was read, or after ``POLL_INTERVAL``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            self._waiters[future] = loop
        try:
            if self._commits != seen:
                return
            timer = loop.call_later(POLL_INTERVAL, wake, future)
            try:
                await future
            finally:
                timer.cancel()
        finally:
            with self._lock:
                self._waiters.pop(future, None)

    # -- the threads' side --------------------------------------------------------------------------

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        # The writer's connection is shared with the callers' threads (here.py), one at a time.
        return connect(self.path, timeout=self.timeout, synchronous=self.synchronous, writer=writer, shared=writer)

    def _serve_writes(self, started: concurrent.futures.Future[None], stopped: concurrent.futures.Future[None]) -> None:
        connection: sqlite3.Connection | None = None
        readers: list[threading.Thread] = []
        try:
            try:
                connection = self._connect(writer=True)
                create_schema(connection, self.path, in_memory=self.in_memory)
                for index in range(self.readers):
                    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
                    reader = threading.Thread(
                        target=self._serve_reads,
                        args=(ready,),
                        name=f"epoch-sqlite-reader-{index}:{self.path}",
                        daemon=True,
                    )
                    reader.start()
                    readers.append(reader)
                    ready.result()
            except BaseException as exc:
                with self._lock:
                    self._started = None  # the next call tries again
                started.set_exception(epoch_error(exc, self.timeout))
                return
            self._writer = connection
            self._ready = True
            started.set_result(None)
            self._writer_loop(connection)
        finally:
            for _ in readers:
                self._reads.put(None)
            for reader in readers:
                reader.join()
            if connection is not None:
                with self._writer_lock:
                    self._writer = None
                    connection.close()
            stopped.set_result(None)

    def _writer_loop(self, connection: sqlite3.Connection) -> None:
        jobs = self._writes
        lock = self._writer_lock
        while True:
            batch: list[Job | None] = [jobs.get()]
            while len(batch) < MAX_GROUP and batch[-1] is not None:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            with settled_after(), lock:  # the callers hear once the connection is free again
                self._use_on_writer(connection)
                run_batch(
                    connection, [job for job in batch if job is not None], self.timeout, self._committed, self._memo
                )
            del batch  # hold no caller's loop or future while waiting for work
            if stop:
                return

    def _committed(self) -> None:
        self._commits += 1
        if self._waiters:
            with self._lock:
                waiters, self._waiters = self._waiters, {}
            wake_all(waiters)

    def _serve_reads(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            connection = self._connect(writer=False)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        jobs = self._reads
        try:
            while (job := jobs.get()) is not None:
                run_read(connection, job, self.timeout)
                del job  # hold no caller's loop or future while waiting for work
        finally:
            connection.close()
