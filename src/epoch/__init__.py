"""epoch: event sourcing and CQRS for Python.

Model a domain as pure deciders, run them against a pluggable event store, and build read models
from the ordered event log::

    import epoch

    async with epoch.open_store("sqlite:///epoch.db") as store:
        handler = epoch.CommandHandler(store, decider, "users", codec)
        result = await handler.execute("42", AddUser(name="ada"))
"""

from epoch.cache import CachedState, StateCache
from epoch.codec import Codec, EventCodec
from epoch.commands import CommandHandler, ExecuteResult, LoadedState
from epoch.domain import Decider, DeciderLike, Saga, View
from epoch.errors import (
    ConfigurationError,
    DecodeError,
    DuplicateEventId,
    EpochError,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidStreamName,
    InvalidVersion,
    KeyNotLoaded,
    MissingDependency,
    ProjectionFailed,
    StoreError,
    StoreFull,
    StoreUnavailable,
    StreamClosed,
    StreamDeleted,
    UnknownEventType,
    WrongExpectedVersion,
)
from epoch.personal import KeyStore, Personal
from epoch.projections import (
    BatchProjection,
    CheckpointStore,
    Projection,
    ProjectionRunner,
    SagaRunner,
    TransactionalProjection,
)
from epoch.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventEnvelope,
    ExpectedVersion,
    ExpectedVersionLike,
    NewEvent,
    RecordedEvent,
    category_of,
)
from epoch.stores import EventStore, open_store

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppendResult",
    "BatchProjection",
    "CachedState",
    "CheckpointStore",
    "Codec",
    "CommandHandler",
    "ConfigurationError",
    "Decider",
    "DeciderLike",
    "DecodeError",
    "DuplicateEventId",
    "EpochError",
    "EventCodec",
    "EventEnvelope",
    "EventStore",
    "ExecuteResult",
    "ExpectedVersion",
    "ExpectedVersionLike",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidStreamName",
    "InvalidVersion",
    "KeyNotLoaded",
    "KeyStore",
    "LoadedState",
    "MissingDependency",
    "NO_STREAM",
    "NewEvent",
    "Personal",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "RecordedEvent",
    "STREAM_EXISTS",
    "Saga",
    "SagaRunner",
    "StateCache",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StreamClosed",
    "StreamDeleted",
    "TransactionalProjection",
    "UnknownEventType",
    "View",
    "WrongExpectedVersion",
    "__version__",
    "category_of",
    "open_store",
]
