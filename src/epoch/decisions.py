"""``DecisionHandler``: a decider over a query instead of a stream (dynamic consistency boundaries).

A decision reads the events matching a query built from the command (across any streams), folds them
through ``evolve``, decides, and appends the new events to one stream with an append condition: no event
matching the query may have been recorded after the last one it read. Of two decisions racing over
overlapping queries exactly one appends; the other reads again and decides again::

    handler = DecisionHandler(
        store, names, codec,
        query=lambda command: Query([QueryItem(tags=(f"username:{command.name}",))]),
        stream=lambda command: f"user-{command.user_id}",
    )
    result = await handler.execute(RegisterUser("42", "ada"))

With ``read_stream=True`` the decision also reads the stream it appends to (the stream decider's own
events, tagged or not) and the append is guarded by that stream's version as well (see
docs/consistency.md). The events a decision writes should match its own query, or the next decision
cannot see them; ``tags`` derives their tags where the codec does not.

With ``snapshots=Snapshots(every=N)`` a decision starts from the newest snapshot of the state over its
query and reads only the events after it (:class:`~epoch.snapshots.QuerySnapshotter`, docs/snapshots.md);
with ``read_stream`` only while the stream still reads from the version the snapshot was folded from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec

from epoch import _backoff as backoff
from epoch._idempotency import check_command_ids, closing, command_events, command_metadata, event_ids_for
from epoch._results import ExecuteResult, written_envelopes
from epoch.codec import EventCodec, encode_events
from epoch.domain import DeciderLike, decide_events, fold, initial_state_of
from epoch.errors import (
    AppendConditionFailed,
    ConfigurationError,
    DuplicateEventId,
    InvalidEvent,
    InvalidQuery,
    StreamClosed,
    WrongExpectedVersion,
)
from epoch.personal import keys_of_codec, preloading, subjects_in
from epoch.queries import AppendCondition, Query
from epoch.records import ANY, NO_STREAM, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.snapshots import QuerySnapshotter, Snapshots, logger
from epoch.stores import EventStore, confirmed_read_of
from epoch.streams import check_stream_name
from epoch.telemetry import current as current_telemetry

__all__ = ["DecisionHandler"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class _Read:
    """What one attempt read: the folded state, the condition's ``after``, and the stream's head when
    the stream was read too (``version`` ``None`` and ``position`` 0 for an empty stream, ``first`` the
    stream's first version folded); with snapshots also how many events it folds, the count of the
    snapshot it started from (``None``: none) and the store's erasure count before the read."""

    state: Any
    after: int | None
    version: int | None
    position: int | None  # without read_stream: not read (_head reads it)
    count: int = 0
    base_count: int | None = None
    erasures: int = 0
    first: int | None = None


class DecisionHandler(Generic[C, S, E]):
    """Runs commands of one decider against the events a query selects, appending to one stream each.

    ``query(command)`` is the decision's consistency boundary (a :class:`~epoch.Query`), ``stream(command)``
    the stream its events go to. Each attempt reads the query (and, with ``read_stream``, the stream),
    folds the events in position order (an event in both is folded once), decides, and appends with
    ``AppendCondition(query, after=<the last position read>)`` (``None`` when nothing matched). When
    another writer recorded a matching event meanwhile (``AppendConditionFailed``, or
    ``WrongExpectedVersion`` for the stream read), the decision is read and made again, at most
    ``1 + retries`` times in all, with the jittered backoff of :class:`~epoch.CommandHandler`; then the
    last error is raised. Nothing is cached. ``snapshots`` (a :class:`~epoch.Snapshots` policy, whose
    ``every`` counts the events a decision folds) makes each attempt start from the newest snapshot of the
    state over its query, on a store that keeps them (docs/snapshots.md); a snapshot only saves time.

    ``tags(event)``, when given, adds tags to each event written, after any the codec gave it.
    ``snapshot_key`` names the decider in its snapshots' keys, for an ``evolve`` that has no name of its
    own (a lambda, a closure, a ``functools.partial``, a bound method, a callable object).
    """

    def __init__(
        self,
        store: EventStore,
        decider: DeciderLike[C, S, E],
        codec: EventCodec[E],
        query: Callable[[C], Query],
        stream: Callable[[C], str],
        retries: int = 20,
        *,
        backoff: float = 0.002,
        max_backoff: float = 0.2,
        read_stream: bool = False,
        tags: Callable[[E], Iterable[str]] | None = None,
        snapshots: Snapshots | None = None,
        snapshot_key: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._telemetry = current_telemetry()  # None without an OpenTelemetry SDK: nothing is recorded
        self.store = store if self._telemetry is None else self._telemetry.traced(store)
        self.decider = decider
        self.codec = codec
        self._keys = keys_of_codec(codec)  # personal data: preload keys before decoding, save before appending
        self.query = query
        self.stream = stream
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.read_stream = read_stream
        self.tags = tags
        self._is_terminal: Callable[[S], bool] | None = getattr(decider, "is_terminal", None)
        self.snapshots = snapshots
        # None: no policy, or a store without query snapshots (it then folds every event, as without them)
        self._snapshots = QuerySnapshotter.of(store, snapshots, decider, read_stream, snapshot_key)
        self._confirmed = confirmed_read_of(self.store)  # a snapshot's stream read: it still starts there
        if self._snapshots is not None and self._keys is not None:
            raise ConfigurationError(
                "DecisionHandler: snapshots and a codec that seals personal data do not mix: a snapshot"
                " would keep the plaintext of personal fields, which forgetting a subject must erase"
            )

    async def execute(
        self,
        command: C,
        *,
        metadata: Mapping[str, Any] | None = None,
        services: object = None,
        command_id: str | UUID | None = None,
        correlation_id: str | UUID | None = None,
        causation_id: str | UUID | None = None,
    ) -> ExecuteResult[S, E]:
        """Read the command's query, fold, decide, and append to ``stream(command)`` under the condition.

        Returns the events written (none for an empty decision, whose ``version``/``position`` are the
        stream's current ones) and ``state``, the fold of the events read plus the new ones. A
        ``command_id`` makes the command idempotent per stream, as in ``CommandHandler``: executing it
        again returns the first execution's result without deciding again. Errors raised by ``decide``
        pass through unchanged; a terminal state raises :class:`StreamClosed`.
        """
        stream = check_stream_name(self.stream(command))
        query = self.query(command)
        if not isinstance(query, Query):
            raise InvalidQuery(f"{stream}: query(command) must return a Query, not {type(query).__name__}")
        watch = check_command_ids(stream, command_id, correlation_id, causation_id)
        if (prior := await self._prior_result(stream, query, command_id)) is not None:
            return prior
        base_metadata = await command_metadata(self.store, metadata, command_id, correlation_id, causation_id)
        if self._telemetry is not None:
            self._telemetry.inject(base_metadata)
        if self._keys is not None:  # personal data: a forget elsewhere is seen before this decision reads
            await self._keys.refresh()
        budget = 1 + self.retries
        decisions = 0
        actual: int | None = None  # the stream's version a failed append found
        while True:
            read = await self._read(stream, query, watch)
            if read is None:  # the command's first event was read: it ran meanwhile
                return await self._prior_or_raise(stream, query, command_id)
            if (
                read.base_count is not None
                and (prior := await self._prior_result(stream, query, command_id)) is not None
            ):
                return prior  # it ran meanwhile, and the snapshot this read started from holds its events
            if self._is_terminal is not None and self._is_terminal(read.state):
                version, _ = await self._head(stream, read)
                raise StreamClosed(stream, version)
            decisions += 1
            events = decide_events(self.decider, command, read.state, services)
            if not events:
                version, position = await self._head(stream, read)
                return ExecuteResult(stream, version, position, [], read.state, decisions)
            new_events = self._encode(stream, events, base_metadata, command_id)
            expected: ExpectedVersionLike = ANY
            if self.read_stream:  # an empty read of a stream with a version: its limits hide every event
                # (as CommandHandler does: decided on what reads show, guarded by the version it has)
                version = read.version if read.version is not None else actual
                expected = NO_STREAM if version is None else version
            try:
                if self._keys is not None:  # personal data: the keys sealed under exist before the events
                    await self._keys.save()
                appended = await self.store.append_with_condition(
                    stream, new_events, AppendCondition(query, read.after), expected
                )
            except (AppendConditionFailed, WrongExpectedVersion) as conflict:
                if (prior := await self._prior_result(stream, query, command_id)) is not None:
                    return prior  # a concurrent execution of the same command id won
                if decisions >= budget:
                    raise
                actual = conflict.actual if isinstance(conflict, WrongExpectedVersion) else None
                await asyncio.sleep(backoff.delay(decisions - 1, self.backoff, self.max_backoff))
                continue
            except DuplicateEventId:
                if (prior := await self._prior_result(stream, query, command_id)) is not None:
                    return prior
                raise
            # Another execution of this command id stored its events first, at this place: its result
            # stands, whatever this decision made of them (a clock or another service may differ).
            if appended.replayed and (prior := await self._prior_result(stream, query, command_id)) is not None:
                return prior
            if self._snapshots is not None:
                await self._snapshot(stream, query, read)
            state = fold(self.decider, read.state, events)
            envelopes = written_envelopes(stream, events, new_events, appended)
            return ExecuteResult(stream, appended.version, appended.position, envelopes, state, decisions)

    # -- reading --------------------------------------------------------------------------------

    async def _read(
        self, stream: str, query: Query, watch: UUID | None, before: int | None = None, erasures: int | None = None
    ) -> _Read | None:
        """Fold the query's events (merged with the stream's, with ``read_stream``) in position order,
        from the query's snapshot when there is one (never with ``before``, nor with ``erasures``: the
        count read with a snapshot found stale, folding anew).

        ``before`` stops at that position (an earlier execution's first event). ``None`` when an event
        with id ``watch`` is read: the command being executed has already run.
        """
        evolve = self.decider.evolve
        decode = self.codec.decode_data
        state = initial_state_of(self.decider)
        after: int | None = None
        start, count, base_count, seen = 0, 0, None, erasures or 0
        version: int | None = None
        covered: int | None = None  # the stream's versions a snapshot holds (read_stream), from ``first``
        first: int | None = None
        if self._snapshots is not None and before is None and erasures is None:
            key, _ = self._snapshots.key(query, stream if self.read_stream else None)
            snapshot, seen = await self._snapshots.load(key)
            if snapshot is not None:
                # The snapshot folds every matching event up to its position (and the stream's up to its
                # version): the condition needs no earlier ``after`` than it (nothing matched between).
                state, start, after = snapshot.state, snapshot.position, snapshot.position
                count = base_count = snapshot.count
                version = covered = snapshot.version
                first = snapshot.first
        own: list[RecordedEvent] = []
        last: RecordedEvent | None = None  # the snapshot's last event of the stream, read again
        if self.read_stream:
            # From a snapshot's last event of the stream, only while the stream still starts at or before
            # the version the snapshot was folded from (epoch.stores.confirmed_read_of, in the read).
            reading = (
                self.store.read_stream(stream) if covered is None else self._confirmed(stream, covered, first or 0)
            )
            async with closing(self._preloaded(reading)) as events:
                own = [recorded async for recorded in events]
            if covered is not None:
                if not own or own[0].version != covered:  # deleted, hidden by limits, or past the stream
                    logger.debug("%s: query snapshot %s ignored: the stream no longer reads as it did", stream, key)
                    return await self._read(stream, query, watch, erasures=seen)
                last = own.pop(0)  # in the snapshot already
            if own and first is None:
                first = own[0].version
        position: int | None = 0
        if own:
            version, position = own[-1].version, own[-1].position
        elif last is not None:
            position = last.position
        mine = 0  # the next of the stream's own events to fold
        reading = self.store.read_query(query) if start == 0 else self.store.read_query(query, start)
        async with closing(self._preloaded(reading)) as events:
            async for recorded in events:
                if before is not None and recorded.position >= before:
                    break
                if covered is not None and recorded.stream == stream and recorded.version <= covered:
                    continue  # the stream's own event, in the snapshot already (it may lie past its position)
                while mine < len(own) and own[mine].position < recorded.position:
                    if own[mine].id == watch:
                        return None
                    state = evolve(state, decode(own[mine]))
                    mine, count = mine + 1, count + 1
                if mine < len(own) and own[mine].position == recorded.position:
                    mine += 1  # in the stream and in the query: folded once, here
                if recorded.id == watch:
                    return None
                state = evolve(state, decode(recorded))
                after, count = recorded.position, count + 1
        for recorded in own[mine:]:
            if before is not None and recorded.position >= before:
                break
            if recorded.id == watch:
                return None
            state = evolve(state, decode(recorded))
            count += 1
        return _Read(state, after, version, position, count, base_count, seen, first)

    async def _snapshot(self, stream: str, query: Query, read: _Read) -> None:
        """After an append guarded by ``read``: a snapshot of the state it was decided on, when due."""
        assert self._snapshots is not None
        key, label = self._snapshots.key(query, stream if self.read_stream else None)
        version = read.version if self.read_stream else None
        # Its position is the query's last one read (a snapshot's own when nothing newer matched), never
        # the stream's: a stream read may show an event past the query's visibility horizon (PostgreSQL),
        # below which a matching event may still become visible; ``version`` covers the stream's events.
        position = read.after or 0
        await self._snapshots.after_append(
            key, label, read.base_count, read.state, position, read.count, version, read.erasures, read.first
        )

    def _preloaded(self, events: AsyncIterator[RecordedEvent]) -> AsyncIterator[RecordedEvent]:
        """``events``, each one's personal-data keys loaded before it is decoded (a codec without keys: as is)."""
        return events if self._keys is None else preloading(self._keys, events)

    async def _head(self, stream: str, read: _Read) -> tuple[int | None, int]:
        """The stream's version and last position: known when it was read, else one backwards read."""
        if self.read_stream and read.position is not None:
            return read.version, read.position
        async with closing(self.store.read_stream(stream, backwards=True, limit=1)) as events:
            async for last in events:
                return last.version, last.position
        return None, 0

    # -- writing --------------------------------------------------------------------------------

    def _encode(
        self, stream: str, events: list[E], metadata: dict[str, Any], command_id: str | UUID | None
    ) -> list[NewEvent]:
        ids = event_ids_for(command_id, stream, len(events)) if command_id is not None else None
        try:
            if self._keys is not None:  # a subject's first event creates its key (saved before the append)
                with self._keys.creating():
                    encoded = encode_events(self.codec, events, metadata, ids)
            else:
                encoded = encode_events(self.codec, events, metadata, ids)
        except InvalidEvent as exc:  # the codec cannot know where the event was going
            raise InvalidEvent(stream, exc.index, exc.reason) from exc
        if self.tags is None:
            return encoded
        tagged = []
        for index, (event, new_event) in enumerate(zip(events, encoded, strict=True)):
            extra = self.tags(event)
            if isinstance(extra, (str, bytes)) or not isinstance(extra, Iterable):
                raise InvalidEvent(
                    stream, index, f"tags(event) must return an iterable of tags, not {type(extra).__name__}"
                )
            # The store checks each tag (InvalidEvent, nothing written) and de-duplicates them.
            tagged.append(msgspec.structs.replace(new_event, tags=(*new_event.tags, *extra)))
        return tagged

    # -- idempotency ----------------------------------------------------------------------------

    async def _prior_result(
        self, stream: str, query: Query, command_id: str | UUID | None
    ) -> ExecuteResult[S, E] | None:
        """The result of an earlier execution of ``command_id`` on ``stream``, or ``None`` (also without one).

        Its state is folded again: the events it could have read (those before its first event), then
        the events it wrote.
        """
        if command_id is None:
            return None
        written = await command_events(self.store, stream, command_id)
        if written is None:
            return None
        read = await self._read(stream, query, None, before=written[0].position)
        assert read is not None  # nothing is watched
        if self._keys is not None:
            await self._keys.preload(subjects_in(written))
        state = fold(self.decider, read.state, [self.codec.decode_data(recorded) for recorded in written])
        last = written[-1]
        return ExecuteResult(stream, last.version, last.position, [self.codec.decode(r) for r in written], state)

    async def _prior_or_raise(self, stream: str, query: Query, command_id: str | UUID | None) -> ExecuteResult[S, E]:
        assert command_id is not None  # only a watched command id stops a read
        prior = await self._prior_result(stream, query, command_id)
        if prior is None:  # pragma: no cover - the read just saw its first event
            raise AssertionError(f"{stream}: command {command_id!r} vanished")
        return prior
