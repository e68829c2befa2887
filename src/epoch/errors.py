"""The error tree.

Every error epoch raises on purpose derives from :class:`EpochError`::

    EpochError
    ├── WrongExpectedVersion        optimistic-concurrency guard failed
    ├── AppendConditionFailed       an event matching an append condition's query was recorded since
    ├── StreamDeleted               the stream was deleted and may not be used this way
    ├── StreamClosed                a terminal stream received a command
    ├── DuplicateEventId            an event id is already stored elsewhere
    ├── ResultUnavailable           a command id ran already, but the state after it no longer reads
    ├── DecodeError                 a stored event cannot be turned into a domain event
    │   └── UnknownEventType        ... because its type is not registered
    ├── KeyNotLoaded                a personal field's key is not in the process's cache (preload it)
    ├── StoreUnavailable            the store cannot be reached (connection lost, timeout)
    │   └── StoreFull               ... because its disk (or its configured size limit) is full
    ├── StoreError                  the database refused an operation; retrying cannot help
    ├── InvalidStreamName (ValueError)
    ├── InvalidExpectedVersion (ValueError)
    ├── InvalidVersion (ValueError) a version or instant outside a stream (time travel)
    ├── InvalidEvent (TypeError)    bad type name or tag, non-bytes data, too large
    ├── InvalidQuery (ValueError)   a malformed query or append condition
    ├── ProjectionFailed            a projection stopped on an event that kept failing
    ├── LeaseLost                   a partition's lease was taken over (epoch.projections.scaleout)
    ├── Unpublishable               a broker can never take this message (epoch.forwarding)
    ├── NotSupported                the store cannot do this (atomically)
    ├── ConfigurationError (ValueError)  a bad store URL or setting
    └── MissingDependency (ImportError)  an optional extra is not installed

Each error keeps its constructor arguments in ``args`` (so it pickles across processes) and exposes them
as attributes; the message names the stream and the versions involved. Errors raised by a user's
``decide`` are never wrapped.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

__all__ = [
    "AppendConditionFailed",
    "ConfigurationError",
    "DecodeError",
    "DuplicateEventId",
    "EpochError",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidQuery",
    "InvalidStreamName",
    "InvalidVersion",
    "KeyNotLoaded",
    "MissingDependency",
    "NotSupported",
    "ProjectionFailed",
    "ResultUnavailable",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StreamClosed",
    "StreamDeleted",
    "UnknownEventType",
    "WrongExpectedVersion",
]


class EpochError(Exception):
    """Root of every error epoch raises on purpose."""


def _fmt_version(value: object) -> str:
    if value is None:
        return "no stream"
    if hasattr(value, "name"):  # an ExpectedVersion member
        return str(value.name)
    return str(value)


class WrongExpectedVersion(EpochError):
    """An append's ``expected_version`` did not match the stream's actual version."""

    def __init__(self, stream: str, expected: Any, actual: int | None) -> None:
        super().__init__(stream, expected, actual)
        self.stream = stream
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return f"{self.stream}: expected version {_fmt_version(self.expected)}, actual {_fmt_version(self.actual)}"


class AppendConditionFailed(EpochError):
    """An ``append_with_condition`` found an event matching the condition's query after its ``after``.

    ``position`` is the first such event's position (``None`` when the store does not say which).
    """

    def __init__(self, stream: str, after: int | None, position: int | None = None) -> None:
        super().__init__(stream, after, position)
        self.stream = stream
        self.after = after
        self.position = position

    def __str__(self) -> str:
        since = "the start" if self.after is None else f"position {self.after}"
        found = "" if self.position is None else f" at position {self.position}"
        return f"{self.stream}: append condition failed: an event matching its query was recorded{found}, after {since}"


class StreamDeleted(EpochError):
    """The stream has been deleted."""

    def __init__(self, stream: str, version: int | None = None) -> None:
        super().__init__(stream, version)
        self.stream = stream
        self.version = version

    def __str__(self) -> str:
        return f"{self.stream}: the stream is deleted (last version {_fmt_version(self.version)})"


class StreamClosed(EpochError):
    """A command reached a stream whose state is terminal."""

    def __init__(self, stream: str, version: int | None) -> None:
        super().__init__(stream, version)
        self.stream = stream
        self.version = version

    def __str__(self) -> str:
        return f"{self.stream}: the stream is closed at version {_fmt_version(self.version)}"


class DuplicateEventId(EpochError):
    """An event id in an append is already stored at another place."""

    def __init__(self, stream: str, id: UUID, existing_stream: str | None, existing_version: int | None) -> None:
        super().__init__(stream, id, existing_stream, existing_version)
        self.stream = stream
        self.id = id
        self.existing_stream = existing_stream
        self.existing_version = existing_version

    def __str__(self) -> str:
        if self.existing_stream is not None and self.existing_version is None:  # not stored: twice in one call
            return f"{self.stream}: event id {self.id} is given twice in one call (also for {self.existing_stream})"
        where = (
            f"{self.existing_stream} version {self.existing_version}"
            if self.existing_stream is not None
            else "another place"
        )
        return f"{self.stream}: event id {self.id} is already stored at {where}"


class ResultUnavailable(EpochError):
    """A command id ran already on the stream, and its events are still stored, but the state after them
    cannot be folded: the stream no longer reads its first event nor the events before it (a soft delete
    or the stream's limits hide them), and they did not start the stream. Nothing was decided or written;
    ``version`` and ``position`` are those of the command's last event."""

    def __init__(self, stream: str, command_id: str, version: int, position: int) -> None:
        super().__init__(stream, command_id, version, position)
        self.stream = stream
        self.command_id = command_id
        self.version = version
        self.position = position

    def __str__(self) -> str:
        return (
            f"{self.stream}: command {self.command_id!r} ran already (its last event is version {self.version}, "
            f"position {self.position}), but the stream no longer reads its first event nor the events before "
            "it, so the state after it cannot be folded"
        )


class DecodeError(EpochError):
    """A stored event could not be decoded into a domain event."""

    def __init__(self, stream: str, version: int, type: str, reason: str = "") -> None:
        super().__init__(stream, version, type, reason)
        self.stream = stream
        self.version = version
        self.type = type
        self.reason = reason

    def __str__(self) -> str:
        text = f"{self.stream}: cannot decode event {self.type!r} at version {self.version}"
        return f"{text}: {self.reason}" if self.reason else text


class UnknownEventType(DecodeError):
    """A stored event's type is not registered with the codec."""

    def __str__(self) -> str:
        return (
            f"{self.stream}: unknown event type {self.type!r} at version {self.version}"
            " (register its class with the codec)"
        )


class KeyNotLoaded(EpochError):
    """A personal field needs the key of ``subject``, which the process has not loaded (or not revalidated
    within a second): ``await keys.preload([subject])`` first. Decoding never waits for the database."""

    def __init__(self, subject: str, stream: str = "", version: int | None = None, type: str = "") -> None:
        super().__init__(subject, stream, version, type)
        self.subject = subject
        self.stream = stream
        self.version = version
        self.type = type

    def __str__(self) -> str:
        where = f"{self.stream}: event {self.type!r} at version {self.version} needs " if self.stream else ""
        return (
            f"{where}the key of subject {self.subject!r}, which is not loaded: "
            f"await keys.preload([{self.subject!r}]) before decoding"
        )


class StoreUnavailable(EpochError):
    """The store cannot be reached: a lost connection, a timeout, a server restart."""

    def __init__(self, message: str, stream: str | None = None) -> None:
        super().__init__(message, stream)
        self.message = message
        self.stream = stream

    def __str__(self) -> str:
        return f"{self.stream}: {self.message}" if self.stream else self.message


class StoreError(EpochError):
    """The store's database refused an operation for a reason retrying cannot fix (not a lost connection).

    For example a broken or foreign schema, missing privileges, or a statement the database cannot run.
    ``code`` is the database's own error code when it has one (PostgreSQL's SQLSTATE).
    """

    def __init__(self, message: str, stream: str | None = None, code: str | None = None) -> None:
        super().__init__(message, stream, code)
        self.message = message
        self.stream = stream
        self.code = code

    def __str__(self) -> str:
        text = f"{self.message} (SQLSTATE {self.code})" if self.code else self.message
        return f"{self.stream}: {text}" if self.stream else text


class StoreFull(StoreUnavailable):
    """The store's disk, or the size limit it was given, is full: nothing of the write was stored.

    A kind of :class:`StoreUnavailable` (the store recovers once space is freed, so code that retries on
    ``StoreUnavailable`` keeps working) that names the cause, so an operator is not sent looking for a
    lost connection.
    """


class InvalidStreamName(EpochError, ValueError):
    """A stream (or category) name breaks the naming rules."""

    def __init__(self, stream: object, reason: str) -> None:
        super().__init__(stream, reason)
        self.stream = stream
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid stream name {self.stream!r}: {self.reason}"


class InvalidExpectedVersion(EpochError, ValueError):
    """``expected_version`` is not ANY, NO_STREAM, STREAM_EXISTS, None or an int >= 0."""

    def __init__(self, stream: str, value: object) -> None:
        super().__init__(stream, value)
        self.stream = stream
        self.value = value

    def __str__(self) -> str:
        return (
            f"{self.stream}: invalid expected version {self.value!r} "
            "(use ANY, NO_STREAM, STREAM_EXISTS, None or an int >= 0)"
        )


class InvalidVersion(EpochError, ValueError):
    """A version or instant does not exist in the stream (e.g. time travel past the head), or a version,
    position or bound given to a store is not one (``looked_up`` False: refused before the stream's
    version was read, so ``actual`` is ``None`` and the message names no stream version)."""

    def __init__(self, stream: str, requested: object, actual: int | None, looked_up: bool = True) -> None:
        super().__init__(*(stream, requested, actual) if looked_up else (stream, requested, actual, False))
        self.stream = stream
        self.requested = requested
        self.actual = actual
        self.looked_up = looked_up

    def __str__(self) -> str:
        if not self.looked_up:
            return f"{self.stream}: invalid version {self.requested!r}"
        return f"{self.stream}: invalid version {self.requested!r} (stream version {_fmt_version(self.actual)})"


class InvalidEvent(EpochError, TypeError):
    """An event to append is malformed: bad type name, non-bytes data or metadata, or too large."""

    def __init__(self, stream: str, index: int, reason: str) -> None:
        super().__init__(stream, index, reason)
        self.stream = stream
        self.index = index
        self.reason = reason

    def __str__(self) -> str:
        if not self.stream:  # from the codec, which does not know where the event is going
            return f"invalid event: {self.reason}"
        return f"{self.stream}: invalid event at index {self.index}: {self.reason}"


class NotSupported(EpochError):
    """The store cannot do this operation (or not atomically): e.g. a multi-stream append on KurrentDB."""

    def __init__(self, store: str, operation: str, reason: str) -> None:
        super().__init__(store, operation, reason)
        self.store = store
        self.operation = operation
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.store} does not support {self.operation}: {self.reason}"


class InvalidQuery(EpochError, ValueError):
    """A :class:`~epoch.queries.Query`, query item or append condition is malformed (the message says how)."""


class ConfigurationError(EpochError, ValueError):
    """A store URL or setting is not understood."""


class MissingDependency(EpochError, ImportError):
    """An optional dependency (an extra) is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(package, extra)
        self.package = package
        self.extra = extra

    def __str__(self) -> str:
        return (
            f"{self.package} is not installed: "
            f"pip install '.[{self.extra}]' in an epoch checkout (or the wheel with [{self.extra}])"
        )


class ProjectionFailed(EpochError):
    """A projection stopped: an event kept failing and its policy is ``"stop"``."""

    def __init__(self, name: str, position: int, stream: str, version: int, error: str) -> None:
        super().__init__(name, position, stream, version, error)
        self.name = name
        self.position = position
        self.stream = stream
        self.version = version
        self.error = error

    def __str__(self) -> str:
        return (
            f"projection {self.name!r} stopped at {self.stream} version {self.version} "
            f"(position {self.position}): {self.error}"
        )
