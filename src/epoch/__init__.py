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
from epoch.decisions import DecisionHandler
from epoch.domain import Decider, DeciderLike, Saga, View
from epoch.errors import (
    AppendConditionFailed,
    ConfigurationError,
    DecodeError,
    DuplicateEventId,
    EpochError,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidQuery,
    InvalidStreamName,
    InvalidVersion,
    KeyNotLoaded,
    MissingDependency,
    NotSupported,
    ProjectionFailed,
    ResultUnavailable,
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
from epoch.queries import AppendCondition, Query, QueryItem
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
from epoch.snapshots import Snapshots
from epoch.stores import EventStore, open_store

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AppendCondition",
    "AppendConditionFailed",
    "AppendResult",
    "BatchProjection",
    "CachedState",
    "CheckpointStore",
    "Codec",
    "CommandHandler",
    "ConfigurationError",
    "Decider",
    "DeciderLike",
    "DecisionHandler",
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
    "InvalidQuery",
    "InvalidStreamName",
    "InvalidVersion",
    "KeyNotLoaded",
    "KeyStore",
    "LoadedState",
    "MissingDependency",
    "NO_STREAM",
    "NewEvent",
    "NotSupported",
    "Personal",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "Query",
    "QueryItem",
    "RecordedEvent",
    "ResultUnavailable",
    "STREAM_EXISTS",
    "Saga",
    "SagaRunner",
    "Snapshots",
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
