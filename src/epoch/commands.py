"""``CommandHandler``: load a stream's state, decide, append — with optimistic concurrency and retries.

The write side of epoch. A handler binds a decider to a store, a category and a codec::

    handler = CommandHandler(store, users_decider, "users", codec)
    result = await handler.execute("42", AddUser(name="ada"))

Loading folds the stream's events through ``evolve`` (starting from a cached state when one is known),
``decide`` turns the command into events, and the append is guarded by the version that was loaded.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID, uuid4, uuid5

import msgspec

from epoch.cache import CachedState, StateCache
from epoch.codec import EventCodec
from epoch.domain import DeciderLike, decide_events, initial_state_of
from epoch.errors import (
    DuplicateEventId,
    InvalidEvent,
    InvalidVersion,
    StreamClosed,
    WrongExpectedVersion,
)
from epoch.records import NO_STREAM, AppendResult, EventEnvelope, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores import EventStore
from epoch.stores._checks import check_category, check_expected_version, check_stream_name, enforce_expected_version

__all__ = ["COMMAND_NAMESPACE", "CommandHandler", "ExecuteResult", "LoadedState", "event_id_for"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")

COMMAND_NAMESPACE = UUID("6f1b6c38-52a4-4f55-9a7e-0c5d1c1f2a90")
"""Namespace for turning a non-UUID command id into the UUID its event ids derive from."""


_METADATA = msgspec.json.Decoder(dict[str, Any])


class _Missing(enum.Enum):
    MISSING = "missing"


_MISSING = _Missing.MISSING


@dataclass(frozen=True, slots=True)
class ExecuteResult(Generic[S, E]):
    """What ``execute`` did: the events written (empty if nothing to do) and the state after them."""

    stream: str
    version: int | None
    position: int
    events: list[EventEnvelope[E]]
    state: S
    attempts: int = 1
    """How many times the command was decided (more than 1 after concurrent writes)."""


class LoadedState(NamedTuple, Generic[S]):
    """A stream's current state and version (``None`` for a new stream); unpacks as a tuple."""

    state: S
    version: int | None


def event_id_for(command_id: str | UUID, stream: str, index: int) -> UUID:
    """The id of the ``index``-th event a command writes to ``stream``: stable, so retries are no-ops."""
    namespace = command_id if isinstance(command_id, UUID) else uuid5(COMMAND_NAMESPACE, command_id)
    return uuid5(namespace, f"{stream}/{index}")


class _Loaded(Generic[S]):
    __slots__ = ("position", "state", "version")

    def __init__(self, state: S, version: int | None, position: int) -> None:
        self.state = state
        self.version = version
        self.position = position


class CommandHandler(Generic[C, S, E]):
    """Runs commands of one decider against streams ``"{category}-{id}"`` of one store.

    ``retries`` bounds the re-load/re-decide cycles after a concurrent write (jittered exponential
    backoff from ``backoff`` seconds up to ``max_backoff``). ``cache`` keeps recent states in process
    (pass ``None`` to disable, or a :class:`StateCache` to size or share it).
    """

    def __init__(
        self,
        store: EventStore,
        decider: DeciderLike[C, S, E],
        category: str,
        codec: EventCodec[E],
        retries: int = 3,
        *,
        backoff: float = 0.002,
        max_backoff: float = 0.2,
        cache: StateCache[S] | None | bool = True,
    ) -> None:
        check_category(category)
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.store = store
        self.decider = decider
        self.category = category
        self.codec = codec
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        if cache is True:
            cache = StateCache()
        # Not `cache or None`: an empty StateCache is falsy (it has a length).
        self.cache: StateCache[S] | None = cache if isinstance(cache, StateCache) else None
        self._is_terminal: Callable[[S], bool] | None = getattr(decider, "is_terminal", None)

    def stream_for(self, id: object) -> str:
        """The stream name of an entity id: ``"{category}-{id}"``."""
        return check_stream_name(f"{self.category}-{id}")

    # -- loading --------------------------------------------------------------------------------

    async def _load(self, stream: str, use_cache: bool = True) -> _Loaded[S]:
        cached = self.cache.get(stream) if (use_cache and self.cache is not None) else None
        if cached is None:
            loaded = _Loaded(initial_state_of(self.decider), None, 0)
            from_version = None
        else:
            loaded = _Loaded(cached.state, cached.version, cached.position)
            from_version = cached.version + 1
        evolve = self.decider.evolve
        decode = self.codec.decode_data
        state = loaded.state
        last: RecordedEvent | None = None
        async for recorded in self.store.read_stream(stream, from_version=from_version):
            state = evolve(state, decode(recorded))
            last = recorded
        if last is not None:
            loaded = _Loaded(state, last.version, last.position)
            if self.cache is not None:
                self.cache.put(stream, CachedState(state, last.version, last.position))
        return loaded

    async def load(self, id: object) -> LoadedState[S]:
        """The current state and version of entity ``id``."""
        loaded = await self._load(self.stream_for(id))
        return LoadedState(loaded.state, loaded.version)

    async def state_at(self, id: object, version: int | None = None, at: datetime | None = None) -> S:
        """Time travel: the state after event ``version``, or after the last event recorded at or before ``at``.

        With neither, the current state. Raises :class:`InvalidVersion` for a version past the stream's
        head (or negative) and for a naive ``at``.
        """
        stream = self.stream_for(id)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise InvalidVersion(stream, version, None)
        if at is not None and at.utcoffset() is None:
            raise InvalidVersion(stream, at, None)
        evolve = self.decider.evolve
        decode = self.codec.decode_data
        state = initial_state_of(self.decider)
        head: int | None = None
        async for recorded in self.store.read_stream(stream):
            if version is not None and recorded.version > version:
                return state
            if at is not None and recorded.recorded_at > at:
                return state
            state = evolve(state, decode(recorded))
            head = recorded.version
        if version is not None and (head is None or version > head):
            raise InvalidVersion(stream, version, head)
        return state

    # -- executing ------------------------------------------------------------------------------

    async def execute(
        self,
        id: object,
        command: C,
        expected_version: ExpectedVersionLike | _Missing = _MISSING,
        *,
        metadata: Mapping[str, Any] | None = None,
        services: object = None,
        command_id: str | UUID | None = None,
        correlation_id: str | UUID | None = None,
        causation_id: str | UUID | None = None,
    ) -> ExecuteResult[S, E]:
        """Decide ``command`` against entity ``id``'s state and append the events.

        Without ``expected_version`` a concurrent write makes the handler re-load and re-decide, at
        most ``1 + retries`` times, then the last :class:`WrongExpectedVersion` is raised. With it
        (e.g. from an HTTP If-Match) the guard is checked once and never retried. A ``command_id`` makes
        the command idempotent per stream: executing it again returns the first execution's result.
        Errors raised by ``decide`` pass through unchanged.
        """
        stream = self.stream_for(id)
        explicit = expected_version is not _MISSING
        expected = check_expected_version(stream, expected_version) if explicit else None
        if command_id is not None:
            prior = await self._prior_result(stream, command_id)
            if prior is not None:
                return prior
        own_id = str(command_id) if command_id is not None else str(uuid4())
        causation = str(causation_id) if causation_id is not None else own_id
        if correlation_id is not None:
            correlation = str(correlation_id)
        else:
            correlation = await self._correlation_of(causation_id) or causation
        base_metadata: dict[str, Any] = dict(metadata or {})
        base_metadata.update({"$correlation_id": correlation, "$causation_id": causation, "$command_id": own_id})

        if not explicit and self.cache is not None and (cached := self.cache.get(stream)) is not None:
            fast = await self._execute_on_cached(stream, cached, command, services, base_metadata, command_id)
            if fast is not None:
                return fast

        attempts = 1 if explicit else 1 + self.retries
        for attempt in range(attempts):
            loaded = await self._load(stream, use_cache=attempt == 0)
            if expected is not None:
                enforce_expected_version(stream, expected, loaded.version)
            if self._is_terminal is not None and self._is_terminal(loaded.state):
                raise StreamClosed(stream, loaded.version)
            events = decide_events(self.decider, command, loaded.state, services)
            if not events:
                return ExecuteResult(stream, loaded.version, loaded.position, [], loaded.state, attempt + 1)
            new_events = self._encode(stream, events, base_metadata, command_id)
            guard = expected if expected is not None else (NO_STREAM if loaded.version is None else loaded.version)
            try:
                appended = await self.store.append(stream, new_events, guard)
            except WrongExpectedVersion:
                if self.cache is not None:
                    self.cache.invalidate(stream)
                if explicit or attempt == attempts - 1:
                    raise
                await asyncio.sleep(self._delay(attempt))
                continue
            except DuplicateEventId:
                # A concurrent execution of the same command id won at another version.
                if command_id is not None and (prior := await self._prior_result(stream, command_id)) is not None:
                    return prior
                raise
            return self._record(stream, loaded.state, events, new_events, appended, attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _execute_on_cached(
        self,
        stream: str,
        cached: CachedState[S],
        command: C,
        services: object,
        base_metadata: dict[str, Any],
        command_id: str | UUID | None,
    ) -> ExecuteResult[S, E] | None:
        """One round trip: decide on the cached state and append guarded by the cached version.

        The guard makes this safe across processes: if anyone wrote after the cached version the append
        fails and ``None`` sends the caller down the normal path (catch up from the cache, re-decide).
        Anything that might be an artefact of a stale state (a terminal state, an empty decision, an
        error from ``decide``) is also left to the normal path, which decides again on fresh state.
        """
        state = cached.state
        if self._is_terminal is not None and self._is_terminal(state):
            return None
        try:
            events = decide_events(self.decider, command, state, services)
        except Exception:  # decide is pure: deciding again on a fresh load raises it for real if it holds
            return None
        if not events:
            return None
        new_events = self._encode(stream, events, base_metadata, command_id)
        try:
            appended = await self.store.append(stream, new_events, cached.version)
        except (WrongExpectedVersion, DuplicateEventId):
            return None
        return self._record(stream, state, events, new_events, appended, 1)

    async def _correlation_of(self, causation_id: str | UUID | None) -> str | None:
        """The correlation id of the stored event that caused this command, if it is one."""
        if causation_id is None:
            return None
        try:
            event_id = causation_id if isinstance(causation_id, UUID) else UUID(causation_id)
        except ValueError:
            return None
        cause = await self.store.get_event(event_id)
        if cause is None or not cause.metadata:
            return None
        value = _METADATA.decode(cause.metadata).get("$correlation_id")
        return None if value is None else str(value)

    def _encode(
        self, stream: str, events: list[E], metadata: dict[str, Any], command_id: str | UUID | None
    ) -> list[NewEvent]:
        encoded = []
        for index, event in enumerate(events):
            event_id = event_id_for(command_id, stream, index) if command_id is not None else None
            try:
                encoded.append(self.codec.encode(event, metadata=metadata, id=event_id))
            except InvalidEvent as exc:  # the codec cannot know where the event was going
                raise InvalidEvent(stream, index, exc.reason) from exc
        return encoded

    def _delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.5))

    def _record(
        self,
        stream: str,
        state: S,
        events: list[E],
        new_events: list[NewEvent],
        appended: AppendResult,
        attempts: int,
    ) -> ExecuteResult[S, E]:
        evolve = self.decider.evolve
        for event in events:
            state = evolve(state, event)
        assert appended.version is not None and appended.recorded_at is not None  # events were written
        first_version = appended.version - len(events) + 1
        envelopes = [
            EventEnvelope(
                stream,
                first_version + index,
                appended.positions[index],
                new_event.id,
                new_event.type,
                event,
                _METADATA.decode(new_event.metadata) if new_event.metadata else {},
                appended.recorded_at,
            )
            for index, (event, new_event) in enumerate(zip(events, new_events, strict=True))
        ]
        if self.cache is not None:
            self.cache.put(stream, CachedState(state, appended.version, appended.position))
        return ExecuteResult(stream, appended.version, appended.position, envelopes, state, attempts)

    async def _prior_result(self, stream: str, command_id: str | UUID) -> ExecuteResult[S, E] | None:
        """The result of an earlier execution of ``command_id`` on ``stream``, or ``None``."""
        first = await self.store.get_event(event_id_for(command_id, stream, 0), stream=stream)
        if first is None or first.stream != stream:
            return None
        written: list[RecordedEvent] = []
        async for recorded in self.store.read_stream(stream, from_version=first.version):
            if recorded.id != event_id_for(command_id, stream, len(written)):
                break
            written.append(recorded)
        if not written:  # the stream was deleted since; its events are still in the log
            written = [first]
        state = await self.state_at(stream.partition("-")[2], version=written[-1].version)
        last = written[-1]
        return ExecuteResult(stream, last.version, last.position, [self.codec.decode(r) for r in written], state)
