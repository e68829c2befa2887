"""Work the SQLite store does on the caller's own thread, without a hand-off to its threads.

A hand-off costs two thread switches (measured ~100 us for an append: queue to the writer, then
``call_soon_threadsafe`` back), more than most of the work it moves. So:

- **Reads.** A small read (a point query, the first page of a read) runs here, on the writer's
  connection when it is free (its page cache holds what it just wrote), else on this thread's own
  read-only connection (whose cache SQLite empties after every commit by another connection). The
  later pages of a long read (1,000 rows each) run here too, on this thread's own connection, one
  page per turn of the loop: a reader thread fetching the next page while the caller folds the last
  one made the two threads fight for the GIL, each switch a wake-up across CPUs (a cold load of
  10,000 events: 30-48 ms with a reader thread, 26-31 ms here; the raw driver 31-34 ms).
- **Writes.** An append runs here, on the writer's connection. A lone one (nothing else of this thread
  waits for the store, the loop has no other work ready) at once: the caller then pays what the plain
  driver pays. Appends made while others are in flight (concurrent commands, a busy loop) are held
  until the loop's current turn ends, then committed together in ONE transaction here, as the writer
  thread's group commit would (a failing one rolls back only its own savepoint). The writer thread did
  that before, but its statements and the loop's each let go of the GIL and took it back, so the two
  threads handed the GIL to each other several times per command, each a wake-up across CPUs (16 tasks
  on 800 streams at FULL: 2.5-3 context switches per command and ~260 us of CPU, against 0.25 and
  ~125 us here). The loop is blocked for one commit (~30 us at NORMAL, one fsync at FULL, plus
  ~20 us an append of a group of at most ``HERE_GROUP``), never for a lock: here the connection
  never waits for another process (busy timeout 0, such a write goes to the writer thread instead) and
  never checkpoints the WAL (every ``CHECKPOINT_EVERY``-th commit is left to the writer thread, which
  does). A lone caller then yields to the loop once, so a loop of commands still lets every other task
  and socket run between them. ``SQLiteEventStore(inline_writes=False)`` turns it off.

Appends go to the writer thread when the writer thread has work queued (so that they never overtake
it), when its connection is busy, and when another process holds the file's write lock.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any

from epoch.errors import StoreUnavailable
from epoch.stores.sqlite.errors import epoch_error, is_lock_conflict
from epoch.stores.sqlite.schema import BEGIN, ROLLBACK, connect
from epoch.stores.sqlite.work import Memo
from epoch.stores.sqlite.writer import WRITE, Job, commit_begun

__all__ = ["BUSY", "CHECKPOINT_EVERY", "HERE_GROUP", "Here", "OnCallerThread"]

BUSY = object()  # this call goes to the store's threads: here it would wait, or the loop is busy

CHECKPOINT_EVERY = 32
"""Every this many writes on the caller's thread, one goes to the writer thread, where SQLite's automatic
WAL checkpoint runs (it is off while writing here: a checkpoint blocks for milliseconds)."""

HERE_GROUP = 64
"""Appends committed together on the caller's thread, at most (the loop is blocked ~20 us for each)."""


class Here:
    """A caller thread's read-only connection (``None`` in memory), held by that thread only (a
    connection has no weak references), how many of that thread's calls wait for the store, and the
    appends held for its next group commit (``flushing``: one is scheduled on its loop)."""

    __slots__ = ("__weakref__", "connection", "flushing", "pending", "waiting")

    def __init__(self, connection: sqlite3.Connection | None) -> None:
        self.connection = connection
        self.waiting = 0
        self.pending: list[Job] = []
        self.flushing = False


def loop_idle(loop: asyncio.AbstractEventLoop) -> bool:
    """True when ``loop`` has no callback ready to run but the current one. asyncio's own loops show it
    (``_ready``); on a loop that does not, the answer is False, and every write takes the writer thread."""
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


class OnCallerThread:
    """The caller-thread half of :class:`~epoch.stores.sqlite.threads.Workers` (which sets these)."""

    path: str
    in_memory: bool
    synchronous: str
    timeout: float
    inline_writes: bool
    _lock: threading.Lock
    _closed: bool
    _writes: queue.SimpleQueue[Job | None]
    _here: threading.local
    _here_connections: weakref.WeakSet[Here]

    def _init_here(self) -> None:
        # The writer's connection and what it knows of the file, shared by the writer thread and the
        # callers' threads: whoever holds ``_writer_lock`` uses them.
        self._writer_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._memo = Memo()
        self._writing_here = False  # the writer's connection is set up for this thread (no waits, no checkpoints)
        self._written_here = 0

    def _committed(self) -> None:
        raise NotImplementedError

    # -- the writer's connection, switched between its two uses ------------------------------------

    def _use_here(self, connection: sqlite3.Connection) -> None:
        """Set the writer's connection up for a caller's thread: never wait for a lock, never checkpoint."""
        if not self._writing_here:
            connection.execute("PRAGMA busy_timeout = 0")
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            self._writing_here = True

    def _use_on_writer(self, connection: sqlite3.Connection) -> None:
        """Set the writer's connection back up for the writer thread: wait ``timeout``, checkpoint."""
        if self._writing_here:
            connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            connection.execute("PRAGMA wal_autocheckpoint = 1000")
            self._writing_here = False

    # -- reads ---------------------------------------------------------------------------------------

    def _held(self) -> Here:
        """This thread's :class:`Here` (its read-only connection is opened by the first read here)."""
        held: Here | None = getattr(self._here, "held", None)
        if held is None:
            held = self._here.held = Here(None)
        return held

    def _read_here(self, fn: Callable[..., Any], args: tuple[Any, ...], *, small: bool = True) -> Any:
        """``fn(connection, *args)`` on this thread, or ``BUSY`` when SQLite would make the read wait for a
        lock. Also while other calls of this thread wait for the store's threads (concurrent commands):
        handing each read to a reader thread costs the loop more than the read (measured with 16 tasks
        on 800 streams: 3,150-3,650 commands/s with reader threads, 3,400-5,600 here). A ``small`` read
        takes the writer's connection when it is free; a large one (a later page of a long read) this
        thread's own, so the writer never waits long for its connection."""
        if self._closed:
            raise StoreUnavailable(f"the SQLite store {self.path} is closed")
        if small and self._writer_lock.acquire(blocking=False):
            try:
                connection = self._writer
                if connection is not None and not self._closed:
                    self._use_here(connection)
                    return self._run_read(fn, connection, args)
            finally:
                self._writer_lock.release()
        if self.in_memory:  # one connection, and the writer thread has it
            return BUSY
        held = self._held()
        connection = held.connection if held.connection is not None else self._connect_here(held)
        return self._run_read(fn, connection, args)

    def _run_read(self, fn: Callable[..., Any], connection: sqlite3.Connection, args: tuple[Any, ...]) -> Any:
        try:
            return fn(connection, *args)
        except sqlite3.Error as exc:
            if is_lock_conflict(exc):
                return BUSY
            raise epoch_error(exc, self.timeout) from exc

    def _connect_here(self, held: Here | None = None) -> sqlite3.Connection:
        """Open this thread's read-only connection (the store's ``close`` closes it)."""
        held = self._held() if held is None else held
        try:  # timeout 0: a read on the caller's thread never sleeps in SQLite's busy handler
            connection = connect(self.path, timeout=0, synchronous=self.synchronous, writer=False, shared=True)
        except sqlite3.Error as exc:
            raise epoch_error(exc, self.timeout) from exc
        with self._lock:
            if self._closed:
                connection.close()
                raise StoreUnavailable(f"the SQLite store {self.path} is closed")
            held.connection = connection
            self._here_connections.add(held)
        return connection

    # -- writes --------------------------------------------------------------------------------------

    def _write_here(self, fn: Callable[..., Any], stream: str, args: tuple[Any, ...]) -> asyncio.Future[Any] | None:
        """An append on this thread (see the module docstring): its future, settled already when the append
        ran alone, else settled by the group commit at the end of the loop's turn or by the writer thread;
        ``None`` with ``inline_writes`` off."""
        if not self.inline_writes:
            return None
        held = self._held()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = Job(WRITE, fn, (stream, *args), stream, loop, future)
        if held.pending and held.pending[0].loop is not loop:  # left by a loop closed before its group
            held.pending.clear()  # commit ran: nobody waits for them, and their loop can run nothing
            held.flushing = False
        if held.waiting or held.pending or not loop_idle(loop):
            held.pending.append(job)
            if not held.flushing:
                held.flushing = True
                loop.call_soon(self._flush_here, held)
            return future
        if not self._commit_here([job]):
            self._to_writer([job])  # the job as built, not built again
        return future

    def _flush_here(self, held: Here) -> None:
        """Commit the appends held for this thread's group commit, ``HERE_GROUP`` at a time; those that
        cannot be committed here go to the writer thread."""
        held.flushing = False
        jobs = [job for job in held.pending[:HERE_GROUP] if not job.future.cancelled()]
        del held.pending[:HERE_GROUP]
        if held.pending:
            held.flushing = True
            asyncio.get_running_loop().call_soon(self._flush_here, held)
        if jobs and not self._commit_here(jobs):
            self._to_writer(jobs)

    def _to_writer(self, jobs: list[Job]) -> None:
        with self._lock:
            if not self._closed:
                for job in jobs:
                    self._writes.put(job)
                return
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(StoreUnavailable(f"the SQLite store {self.path} is closed"))

    def _commit_here(self, jobs: list[Job]) -> bool:
        """Run ``jobs`` (appends) in one transaction on the writer's connection, on this thread, and settle
        them; ``False`` (nothing done) when they must go to the writer thread instead."""
        if self._closed or not self._writes.empty():
            return False
        self._written_here += 1
        if self._written_here % CHECKPOINT_EVERY == 0:
            return False  # this one checkpoints, on the writer thread
        if not self._writer_lock.acquire(blocking=False):
            return False
        try:
            connection = self._writer
            if connection is None or self._closed:
                return False
            self._use_here(connection)
            try:
                connection.execute(BEGIN)
            except sqlite3.Error as exc:
                if is_lock_conflict(exc):  # another process writes: the writer thread waits for it
                    return False
                error = epoch_error(exc, self.timeout, jobs[0].stream)
                for job in jobs:
                    job.future.set_exception(error)
                return True
            try:
                commit_begun(connection, jobs, self.timeout, self._committed, self._memo)
            except BaseException:  # e.g. KeyboardInterrupt: never leave the file's write lock held
                self._memo.forget()
                if connection.in_transaction:
                    connection.execute(ROLLBACK)
                for job in jobs:
                    job.future.cancel()  # interrupted: nothing of it was committed
                raise
            return True
        finally:
            self._writer_lock.release()
