"""``CommandHandler``: load a stream's state, decide, append — with optimistic concurrency and retries.

The write side of epoch. A handler binds a decider to a store, a category and a codec::

    handler = CommandHandler(store, users_decider, "users", codec)
    result = await handler.execute("42", AddUser(name="ada"))

Loading folds the stream's events through ``evolve`` (starting from a cached state when one is known),
``decide`` turns the command into events, and the append is guarded by the version that was loaded.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from epoch import _backoff as backoff
from epoch import _forget
from epoch._idempotency import (
    COMMAND_NAMESPACE,
    check_command_ids,
    closing,
    command_metadata,
    erased_start_of,
    event_id_for,
    event_ids_for,
    first_execution,
)
from epoch._lanes import Lanes
from epoch._results import ExecuteResult, Job, LoadedState, written_envelopes
from epoch.cache import CachedState, StateCache
from epoch.codec import EventCodec, encode_events
from epoch.domain import DeciderLike, initial_state_of
from epoch.errors import (
    ConfigurationError,
    InvalidEvent,
    InvalidVersion,
    StreamDeleted,
)
from epoch.personal import keys_of_codec, preloading, subjects_in
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.snapshots import Snapshots, Snapshotter
from epoch.stores import EventStore, confirmed_read_of, guarded_append_of
from epoch.streams import check_category, check_expected_version, check_stream_name
from epoch.telemetry import current as current_telemetry

__all__ = ["COMMAND_NAMESPACE", "CommandHandler", "ExecuteResult", "LoadedState", "event_id_for", "written_envelopes"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


class _Missing(enum.Enum):
    MISSING = "missing"


_MISSING = _Missing.MISSING


class CommandHandler(Generic[C, S, E]):
    """Runs commands of one decider against streams ``"{category}-{id}"`` of one store.

    Commands for one stream never race each other inside one handler: while one runs, the others sent to
    that stream queue, and are then decided one after another, each on the state the ones before it left,
    and appended together in ONE append guarded by the version the batch started from (epoch/_run.py).
    Each command still gets its own result (its events, version and state) or its own error: a decide
    error fails only that command. The trade-offs: a queued command waits for the batch ahead of it (one
    append), and the append is all or nothing, so when another process wrote first, the whole batch is
    decided again on the new state — no command's outcome stands before the append that confirms it.
    A command with an explicit ``expected_version`` is not queued: it is checked once, on its own.

    ``retries`` bounds the re-load/re-decide cycles after a concurrent write from elsewhere (another
    handler or process), with jittered exponential backoff from ``backoff`` seconds up to
    ``max_backoff``. The default, 20, is sized for a hot stream written by several processes
    (benchmarks/hot_stream.py, docs/concepts.md "The retry budget"). The price is the wait before a
    command that keeps losing raises: about 3 s of backoff (4.3 s at most) once all 20 retries are used.
    Pass fewer to fail fast under overload, more for a stream with more concurrent writers. ``cache``
    keeps recent states in process (pass ``None`` to disable, or a :class:`StateCache` to size or share it).
    With an OpenTelemetry SDK set up when the handler is created (docs/observability.md), ``store`` is
    the given store wrapped in spans. ``snapshots`` (a :class:`~epoch.snapshots.Snapshots` policy) makes
    loads start from the newest usable snapshot and writes one when an append crosses the policy's
    interval (docs/snapshots.md).
    """

    def __init__(
        self,
        store: EventStore,
        decider: DeciderLike[C, S, E],
        category: str,
        codec: EventCodec[E],
        retries: int = 20,
        *,
        backoff: float = 0.002,
        max_backoff: float = 0.2,
        cache: StateCache[S] | None | bool = True,
        snapshots: Snapshots | None = None,
    ) -> None:
        check_category(category)
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._telemetry = current_telemetry()  # None without an OpenTelemetry SDK: nothing is recorded
        self.store = store if self._telemetry is None else self._telemetry.traced(store)
        self.decider = decider
        self.category = category
        self.codec = codec
        self._keys = keys_of_codec(codec)  # personal data: preload keys before decoding, save before appending
        self._key_generation = 0
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        if cache is True:
            cache = StateCache()
        # Not `cache or None`: an empty StateCache is falsy (it has a length).
        self.cache: StateCache[S] | None = cache if isinstance(cache, StateCache) else None
        self._is_terminal: Callable[[S], bool] | None = getattr(decider, "is_terminal", None)
        self._guarded = guarded_append_of(self.store)
        self._confirmed = confirmed_read_of(self.store)
        self.snapshots = snapshots
        self._snapshots = Snapshotter.of(store, snapshots, decider)  # None: no policy, or a store without them
        if self._snapshots is not None and self._keys is not None:
            raise ConfigurationError(
                f"{self.category}: snapshots and a codec that seals personal data do not mix: a snapshot"
                " would keep the plaintext of personal fields, which forgetting a subject must erase"
            )
        from epoch import _run  # it builds this module's results, so it is imported once this module is loaded

        self._alone = functools.partial(_run.alone if self._keys is None else _forget.alone, self)  # (forgets)
        self._lanes: Lanes[Job[C], ExecuteResult[S, E], CachedState[S]] = Lanes(
            lambda stream, job: self._alone(stream, job, None), functools.partial(_run.batch, self)
        )

    def stream_for(self, id: object) -> str:
        """The stream name of an entity id: ``"{category}-{id}"``."""
        return check_stream_name(f"{self.category}-{id}")

    # -- loading --------------------------------------------------------------------------------

    async def _fold(
        self, stream: str, base: CachedState[S] | None, watch: UUID | None = None, confirm: bool = False
    ) -> CachedState[S] | None:
        """The state after the stream's last event, folded on from ``base`` (``None``: from the newest usable
        snapshot, else from the start; one without a version: from the start).

        A ``base`` (a cached or earlier state, or a snapshot) is only trusted when its own event is still
        the stream's event at that version: the read starts *at* ``base.version`` and checks the event's
        position. A stream deleted (and perhaps re-created elsewhere) since hides that event, so the fold
        starts over from the initial state and never decides on deleted events. Returns ``None`` when an
        event with id ``watch`` (the first event of the command being executed) is in the stream: that
        command was already executed, by this process or another. ``confirm`` (always, from a snapshot):
        also start over when the stream no longer starts where ``base`` was folded from
        (``epoch.stores.confirmed_read_of``, in the read), e.g. limits hide events (then without snapshots).
        """
        generation = _forget.generation(self)  # the key generation the events decode under (epoch/_forget.py)
        if base is not None and base.generation != generation:  # folded before a forget seen since
            base = None
        snapshot = None
        if base is None and self._snapshots is not None:
            snapshot = await self._snapshots.newest(stream)  # usable as loaded: the store checked it
        if snapshot is not None and snapshot.version is not None:  # fold on from its own event
            loaded, from_version, check, confirm = snapshot, snapshot.version, True, True
        elif base is None or base.version is None:
            start = CachedState(initial_state_of(self.decider), None, 0, 0, generation)
            loaded, from_version, check = start, None, False
        else:
            loaded, from_version, check = base, base.version, True
        # Where the state is folded from: a base's or a snapshot's own start, else the first version read.
        first: int | None = None if loaded.version is None else loaded.first_version
        evolve, decode, state = self.decider.evolve, self.codec.decode_data, loaded.state
        last: RecordedEvent | None = None
        stale = check  # until the base's own event is seen
        if confirm and check and from_version is not None:
            read = self._confirmed(stream, from_version, loaded.first_version)
        else:
            read = self.store.read_stream(stream, from_version=from_version)
        async with closing(read if self._keys is None else preloading(self._keys, read)) as events:
            async for recorded in events:
                if check:
                    check = False
                    if recorded.version != loaded.version or recorded.position != loaded.position:
                        break
                    stale = False  # the base is current up to here
                    continue
                if watch is not None and (recorded.id == watch or (first is None and erased_start_of(recorded, watch))):
                    return None
                if first is None:
                    first = recorded.version
                state = evolve(state, decode(recorded))
                last = recorded
        if stale:  # the base's event is gone (deleted, perhaps re-created elsewhere, hidden): start over
            fresh = None if snapshot is None else CachedState(loaded.state, None, 0)  # a snapshot's: without one
            return await self._fold(stream, fresh, watch)
        if last is not None:
            first = loaded.first_version if first is None else first
            loaded = CachedState(state, last.version, last.position, first, generation)
        if generation != _forget.generation(self):  # a forget overtook the fold: fold again, from the start
            return await self._fold(stream, None, watch)
        if (last is not None or snapshot is not None) and self.cache is not None:
            self.cache.put(stream, loaded)
        return loaded

    async def _load(self, stream: str, watch: UUID | None = None) -> CachedState[S] | None:
        if self._keys is not None:  # personal data: a forget anywhere drops the cached states first
            await _forget.forgotten(self)
        return await self._fold(stream, self.cache.get(stream) if self.cache is not None else None, watch)

    async def _confirm(self, stream: str, base: CachedState[S], watch: UUID | None = None) -> CachedState[S] | None:
        """The state folded on from a cached ``base`` that no append will check: the read confirms the stream
        still starts where ``base`` was folded from (after a truncation, erasure or delete: from the start)."""
        return await self._fold(stream, base, watch, confirm=True)

    async def _refuse_tombstone(self, stream: str) -> None:
        """``StreamDeleted`` when the (empty-reading) stream is hard-deleted: an empty append checks, writes nothing."""
        await self.store.append(stream, [], ANY)

    async def _append(
        self, stream: str, events: list[NewEvent], guard: ExpectedVersionLike, base: CachedState[S]
    ) -> AppendResult:
        """Append events decided on ``base``, refused (a conflict) when the stream no longer starts at the
        version ``base`` was folded from: in the append's own round trip where the store can check it,
        else after one small read (``epoch.stores.guarded_append_of``)."""
        try:
            if base.version is None:
                return await self.store.append(stream, events, guard)
            return await self._guarded(stream, events, guard, base.first_version)
        except StreamDeleted:
            if self.cache is not None:
                self.cache.invalidate(stream)
            raise

    async def load(self, id: object) -> LoadedState[S]:
        """The current state and version of entity ``id``; ``StreamDeleted`` when it was hard-deleted."""
        stream = self.stream_for(id)
        if self._keys is not None:
            await _forget.forgotten(self)  # a forget anywhere drops the cached states first
        base = self.cache.get(stream) if self.cache is not None else None
        loaded = await (self._fold(stream, None) if base is None else self._confirm(stream, base))
        assert loaded is not None  # nothing is watched
        if loaded.version is None:
            await self._refuse_tombstone(stream)
        return LoadedState(loaded.state, loaded.version)

    async def state_at(self, id: object, version: int | None = None, at: datetime | None = None) -> S:
        """Time travel: the state after event ``version``, or after the last event recorded at or before ``at``.

        With neither, the current state. Raises :class:`InvalidVersion` for a version that is not an int
        >= 0 or is past the stream's head, and for an ``at`` that is not an aware datetime.
        """
        stream = self.stream_for(id)
        bad_version = version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0)
        bad_at = at is not None and (not isinstance(at, datetime) or at.utcoffset() is None)
        if bad_version or bad_at:
            raise InvalidVersion(stream, version if bad_version else at, await self.store.stream_version(stream))
        snapshot = None
        if self._snapshots is not None and at is None:  # from the newest snapshot at or below the version
            snapshot = await self._snapshots.newest(stream, version)
        # None: the stream does not read on from the snapshot (as in _fold), so fold without it.
        found = await self._travel(stream, version, at, snapshot) or await self._travel(stream, version, at, None)
        assert found is not None  # from the first event: always
        state, head, seen = found
        if not seen:  # nothing reads: a tombstone raises StreamDeleted, as in load
            await self._refuse_tombstone(stream)
        if version is not None and head != version:  # past the head, or hidden (truncated, limited, deleted)
            raise InvalidVersion(stream, version, await self.store.stream_version(stream))
        return state

    async def _travel(
        self, stream: str, version: int | None, at: datetime | None, snapshot: CachedState[S] | None
    ) -> tuple[S, int | None, bool] | None:
        """``(state, last version folded, whether any event was read)`` up to ``version`` or ``at``, from the
        first event or from ``snapshot``, read as :meth:`_fold` reads one (``None``: not read on from it)."""
        evolve, decode = self.decider.evolve, self.codec.decode_data
        state, head, seen = initial_state_of(self.decider), None, False
        if snapshot is None or snapshot.version is None:  # up to the version asked for, not one event past it
            read = self.store.read_stream(stream, limit=None if version is None else version + 1)
        else:
            state, read = snapshot.state, self._confirmed(stream, snapshot.version, snapshot.first_version)
        async with closing(read if self._keys is None else preloading(self._keys, read)) as events:
            async for recorded in events:
                if snapshot is not None and head is None:  # its own event first, or not read on from it
                    if (recorded.version, recorded.position) != (snapshot.version, snapshot.position):
                        return None
                elif (version is not None and recorded.version > version) or (at and recorded.recorded_at > at):
                    seen = True
                    break
                else:
                    state = evolve(state, decode(recorded))
                seen, head = True, recorded.version
                if head == version:
                    break
        return None if snapshot is not None and head is None else (state, head, seen)

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

        Without ``expected_version`` the command joins its stream's queue when another command is
        running there (see the class docstring), and a concurrent write from elsewhere makes the handler
        re-load and re-decide, at most ``1 + retries`` decisions in all, then the last
        :class:`WrongExpectedVersion` is raised. With it (e.g. from an HTTP If-Match) the guard is
        checked once and never retried. A ``command_id`` makes the command idempotent per stream:
        executing it again — also while another execution of it races this one — returns the first
        execution's result without deciding again.
        Errors raised by ``decide`` pass through unchanged.
        """
        if self._telemetry is not None and self._telemetry.outside():  # run again inside a span
            args = (metadata, services, command_id, correlation_id, causation_id)
            return await self._telemetry.execute(self, id, command, expected_version, *args)
        stream = self.stream_for(id)
        explicit = expected_version is not _MISSING
        expected = check_expected_version(stream, expected_version) if explicit else None
        watch = check_command_ids(stream, command_id, correlation_id, causation_id)
        if command_id is not None:
            prior = await self._prior_result(stream, command_id, further=False)  # (the fold checks the rest)
            if prior is not None:
                return prior
        base_metadata = await command_metadata(self.store, metadata, command_id, correlation_id, causation_id)
        if self._keys is not None:
            await _forget.forgotten(self)
        job = Job(command, services, command_id, watch, base_metadata)
        if self._telemetry is not None:
            self._telemetry.begin(job)
        if explicit:  # checked once against the version it names: no lane, nothing to serialise
            return await self._alone(stream, job, expected)
        return await self._lanes.run(stream, job)

    async def _prior_or_raise(self, stream: str, command_id: str | UUID | None) -> ExecuteResult[S, E]:
        assert command_id is not None  # only a watched command id stops a fold
        prior = await self._prior_result(stream, command_id)
        if prior is None:  # pragma: no cover - the fold just saw its first event in the stream
            raise AssertionError(f"{stream}: command {command_id!r} vanished")
        return prior

    def _encode(
        self, stream: str, events: list[E], metadata: dict[str, Any], command_id: str | UUID | None
    ) -> list[NewEvent]:
        ids = event_ids_for(command_id, stream, len(events)) if command_id is not None else None
        try:
            if self._keys is not None:  # a subject's first event creates its key (saved before the append)
                with self._keys.creating():
                    return encode_events(self.codec, events, metadata, ids)
            return encode_events(self.codec, events, metadata, ids)
        except InvalidEvent as exc:  # the codec cannot know where the event was going
            raise InvalidEvent(stream, exc.index, exc.reason) from exc

    def _delay(self, attempt: int) -> float:
        return backoff.delay(attempt, self.backoff, self.max_backoff)

    def _record(
        self,
        stream: str,
        state: S,
        events: list[E],
        new_events: list[NewEvent],
        appended: AppendResult,
        attempts: int,
        folded_from: int | None = None,
        cache: bool = True,
    ) -> ExecuteResult[S, E]:
        """The result of an append that wrote ``events``; ``state``: after them, folded from ``folded_from``
        (``None``: the first written). ``cache`` False: not the stream's state (others wrote between): dropped."""
        envelopes = written_envelopes(stream, events, new_events, appended)
        if self.cache is not None:
            if not cache:
                self.cache.invalidate(stream)
            else:
                first = envelopes[0].version if folded_from is None else folded_from
                cached = CachedState(state, appended.version, appended.position, first, _forget.generation(self))
                self.cache.put(stream, cached)
        return ExecuteResult(stream, appended.version, appended.position, envelopes, state, attempts)

    async def _prior_result(
        self, stream: str, command_id: str | UUID | None, further: bool = True
    ) -> ExecuteResult[S, E] | None:
        """An earlier execution's result (``None``: none; ``further``: also after an erasure took its first event)."""
        if command_id is None:
            return None
        if (found := await first_execution(self.store, stream, command_id, self.decider, self.codec, further)) is None:
            return None
        written, state = found
        if self._keys is not None:
            await self._keys.preload(subjects_in(written))
        last = written[-1]
        return ExecuteResult(stream, last.version, last.position, [self.codec.decode(r) for r in written], state)
