"""The one place where ``kurrentdbclient``'s and gRPC's errors become epoch's: a table, read top down.

Every call into the client runs inside :func:`driver_errors`, so nothing above this module sees a driver
exception or digs one out of ``__cause__``. The first row whose exception class matches decides:

=================================== ==========================================================================
client / gRPC exception             epoch error
=================================== ==========================================================================
``StreamIsDeletedError``            :class:`~epoch.errors.StreamDeleted` (hard-deleted by another tool)
``AccessDeniedError``               :class:`~epoch.errors.ConfigurationError` (the server's ACLs: a setting
                                    to fix, not a connection to retry)
``WrongCurrentVersionError``        :class:`~epoch.errors.WrongExpectedVersion` with the server's actual
                                    version, when the caller passed the guard it sent
``MaximumAppendSizeExceededError``  :class:`~epoch.errors.InvalidEvent` (the server's ``MaxAppendSize``)
any other client error, gRPC error  :class:`~epoch.errors.StoreUnavailable`
or ``OSError``
=================================== ==========================================================================

Transient failures are retried below this table, by the client itself: it reconnects (to the leader, on a
cluster) and repeats a failed gRPC call once. What still fails reaches epoch as ``StoreUnavailable``,
which callers that run for long (live projection runners) retry. Answers that are
control flow for the store rather than errors (``NotFoundError`` for a missing stream, a
``WrongCurrentVersionError`` while deleting) are caught by the store inside the block, before the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from epoch.errors import (
    ConfigurationError,
    EpochError,
    InvalidEvent,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from epoch.records import ExpectedVersion

try:
    import grpc
    from kurrentdbclient.exceptions import (
        AccessDeniedError,
        KurrentDBClientError,
        MaximumAppendSizeExceededError,
        ProgrammingError,
        StreamIsDeletedError,
        WrongCurrentVersionError,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("kurrentdbclient", "kurrentdb") from exc

__all__ = ["DRIVER_ERRORS", "driver_errors", "to_actual"]

Guard = ExpectedVersion | int | None
"""The expected version an append sent (``None``: the call sent none that epoch's caller chose)."""

Mapper = Callable[[Any, str | None, Guard], EpochError]


def to_actual(value: object) -> int | None:
    """The ``actual_version`` of a ``WrongCurrentVersionError`` as epoch's actual version."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _unavailable(exc: Any, stream: str | None, expected: Guard) -> EpochError:
    return StoreUnavailable(f"KurrentDB: {type(exc).__name__}: {exc}".rstrip(": "), stream)


def _deleted(exc: Any, stream: str | None, expected: Guard) -> EpochError:
    return StreamDeleted(stream or "$all")


def _refused(exc: Any, stream: str | None, expected: Guard) -> EpochError:
    hint = ""
    if stream is not None and stream.startswith("$"):
        hint = ": system streams ($...) need a user in $admins, or the server's $systemStreamAcl to allow it"
    return ConfigurationError(f"{stream or '$all'}: KurrentDB refused access ({str(exc) or 'access denied'}){hint}")


def _wrong_version(exc: Any, stream: str | None, expected: Guard) -> EpochError:
    if stream is None or expected is None:  # no guard of the caller's was sent: the server misbehaved
        return _unavailable(exc, stream, expected)
    return WrongExpectedVersion(stream, expected, to_actual(exc.actual_version))


def _too_large(exc: Any, stream: str | None, expected: Guard) -> EpochError:
    return InvalidEvent(stream or "$all", 0, f"the batch exceeds the server's MaxAppendSize: {exc}")


DRIVER_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Mapper], ...] = (
    (StreamIsDeletedError, _deleted),
    (AccessDeniedError, _refused),
    (WrongCurrentVersionError, _wrong_version),
    (MaximumAppendSizeExceededError, _too_large),
    ((KurrentDBClientError, ProgrammingError, grpc.RpcError, grpc.aio.BaseError, OSError), _unavailable),
)
"""The table (see the module docs): the first row whose exception class matches maps the error."""


@contextlib.contextmanager
def driver_errors(stream: str | None, expected: Guard = None) -> Iterator[None]:
    """Map the client's and gRPC's errors through :data:`DRIVER_ERRORS`; epoch's own errors pass through.

    ``stream`` names the stream the call is about (``None``: ``$all``); ``expected`` is the guard an
    append sent, reported back in :class:`~epoch.errors.WrongExpectedVersion`.
    """
    try:
        yield
    except EpochError:
        raise
    except Exception as exc:
        for kinds, mapper in DRIVER_ERRORS:
            if isinstance(exc, kinds):
                raise mapper(exc, stream, expected) from exc
        raise
