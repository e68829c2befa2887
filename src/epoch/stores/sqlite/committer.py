"""The SQLite store's committer thread: the COMMIT of a group of appends run on a caller's thread
(``here``), at ``synchronous=FULL`` or ``EXTRA``, where a commit waits for the disk.

The caller's thread runs the group's statements, then hands the COMMIT (and the write lock with it)
here, and its loop reads and decides the next commands during the sync instead of waiting for it. The
commit is this thread's only work: it holds the GIL twice per group (to start the statement and to post
the outcomes), so it does not make the loop's thread wait for the GIL the way the writer thread's
statements did. It is not the writer thread, which may itself be waiting for the write lock that the
handed commit holds.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from epoch.stores.sqlite.writer import settled_after

__all__ = ["Committer"]

logger = logging.getLogger("epoch.stores.sqlite")

_Commit = tuple[Callable[[], None], Callable[[], None], Callable[[], None]]


class Committer:
    """One thread, started on first use, running ``end()`` (a COMMIT and the group's outcomes), then
    ``release()`` (the write lock), then ``done()``, for each commit handed to it, in order."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._commits: queue.SimpleQueue[_Commit | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, end: Callable[[], None], release: Callable[[], None], done: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=f"epoch-sqlite-committer:{self._path}", daemon=True
                )
                self._thread.start()
        self._commits.put((end, release, done))

    def stop(self) -> None:
        """Let the thread end once the commits handed to it are done."""
        with self._lock:
            if self._thread is not None:
                self._commits.put(None)

    def _serve(self) -> None:
        while (commit := self._commits.get()) is not None:
            end, release, done = commit
            try:
                with settled_after():  # the callers hear once the write lock is free again
                    try:
                        end()
                    finally:
                        release()
            except Exception:  # never lose the thread: every later commit would wait forever
                logger.exception("a commit of the SQLite store %s failed unexpectedly", self._path)
            finally:
                done()
            del commit, end, release, done  # hold no caller's loop or future while waiting
