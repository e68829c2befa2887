"""The one table from ``sqlite3`` driver errors to epoch errors.

SQLite names each failure with a result code (``sqlite_errorcode``; its low byte is the primary code,
the rest refines it). The store's threads turn every driver error into an epoch error here, once, where
they called the driver; above them only epoch errors travel, with the driver's error as ``__cause__``.

Codes that pass (a lock held by another connection, a full disk) become
:class:`~epoch.errors.StoreUnavailable`, so callers that retry keep retrying; a file that can never work
as it is (damaged, not a database, read-only, a value over SQLite's limit) becomes
:class:`~epoch.errors.StoreError`. Any other driver error is ``StoreUnavailable``.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from epoch.errors import EpochError, StoreError, StoreFull, StoreUnavailable

__all__ = ["epoch_error", "is_lock_conflict"]


class _Row(NamedTuple):
    error: type[StoreUnavailable] | type[StoreError]
    message: str  # formatted with the driver's error as ``exc`` and the writer's lock ``timeout``


_LOCKED = _Row(
    StoreUnavailable, "the database is locked: another connection held it for more than {timeout:g} s ({exc})"
)

_TABLE: dict[int, _Row] = {
    # SQLite has rolled the transaction back; say so, so nobody goes looking for a lost connection.
    sqlite3.SQLITE_FULL: _Row(
        StoreFull,
        "the database or disk is full: nothing of this write was stored;"
        " free space (or raise max_page_count) and retry",
    ),
    sqlite3.SQLITE_BUSY: _LOCKED,  # another connection holds the lock the statement needs
    sqlite3.SQLITE_LOCKED: _LOCKED,  # a conflict inside this process's shared cache
    sqlite3.SQLITE_CORRUPT: _Row(StoreError, "the database file is damaged ({exc}): restore it from a backup"),
    sqlite3.SQLITE_NOTADB: _Row(StoreError, "the file is not an SQLite database ({exc})"),
    sqlite3.SQLITE_READONLY: _Row(StoreError, "the database cannot be written by this process ({exc})"),
    sqlite3.SQLITE_TOOBIG: _Row(StoreError, "a value is larger than SQLite allows ({exc})"),
}
_OTHER = _Row(StoreUnavailable, "SQLite failed: {exc}")  # e.g. SQLITE_CANTOPEN (a missing directory), IOERR


def _code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)  # None when the driver itself refused (a closed connection)
    return code & 0xFF if isinstance(code, int) else -1


def epoch_error(exc: BaseException, timeout: float, stream: str | None = None) -> BaseException:
    """The epoch error for a driver error, chained to it; any other exception is returned unchanged.

    ``stream`` is the stream of the write that failed, if any; ``timeout`` the writer's lock timeout.
    """
    if isinstance(exc, EpochError) or not isinstance(exc, sqlite3.Error):
        return exc
    row = _TABLE.get(_code(exc), _OTHER)
    error = row.error(row.message.format(exc=exc, timeout=timeout), stream)
    error.__cause__ = exc
    return error


def is_lock_conflict(exc: BaseException) -> bool:
    """True for a driver error saying another connection holds a lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    return isinstance(exc, sqlite3.Error) and _TABLE.get(_code(exc)) is _LOCKED
