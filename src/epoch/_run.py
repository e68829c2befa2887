"""How a :class:`~epoch.commands.CommandHandler` runs commands: alone, or a stream's queue as one batch.

``alone`` is the attempt loop of one command (an idle stream, or an explicit ``expected_version``).
``batch`` runs the commands queued on one busy stream (epoch/_lanes.py) together: it decides them one
after another, each on the state the ones before it left, and appends all their events in ONE append
guarded by the version the batch started from. Each command keeps its own outcome: a decide (or encode)
error fails only its own command, and the next ones decide as if it had not been sent; an empty decision
writes nothing; a command id repeated inside the batch gets the first one's result. The append is all or
nothing, so no outcome stands until it has succeeded: on a conflict (another process wrote), every
command of the batch is decided again on the new state, with the commands queued since, after the
handler's backoff, each within its own retry budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from epoch import _forget
from epoch._lanes import Waiting
from epoch._results import ExecuteResult, Job
from epoch.cache import CachedState
from epoch.domain import decide_events
from epoch.errors import DuplicateEventId, InvalidEvent, StreamClosed, WrongExpectedVersion
from epoch.records import NO_STREAM, STREAM_EXISTS, AppendResult, ExpectedVersionLike, NewEvent
from epoch.streams import enforce_expected_version

if TYPE_CHECKING:
    from epoch.commands import CommandHandler

__all__ = ["alone", "batch"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")

Queued = Waiting[Job[Any], ExecuteResult[S, Any]]

MAX_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes of data and metadata one batch appends at most (the commands past it go in the next append; one
command's events are never split): PostgreSQL refuses a parameter past 1 GB (64 commands of 17 MiB)."""


async def alone(
    handler: CommandHandler[C, S, E], stream: str, job: Job[C], expected: ExpectedVersionLike
) -> ExecuteResult[S, E]:
    """Execute one command on its own: the path of an idle stream and of an explicit ``expected_version``."""
    command, services, command_id, watch = job.command, job.services, job.command_id, job.watch
    explicit = expected is not None
    # One loop, one budget: every run of ``decide`` is an attempt. The first may decide on the cached
    # state without reading (the append's guard proves it current); an outcome that would not be
    # checked by an append (an error, an empty decision, a terminal state) is confirmed by one read
    # first, and a cached state found stale counts as a conflict like a failed append.
    budget = 1 if explicit else 1 + handler.retries
    loaded = handler.cache.get(stream) if (not explicit and handler.cache is not None) else None
    fresh = loaded is None
    decisions = 0
    hidden: int | None = None  # the version of a stream whose every event its limits hide (see below)
    while True:
        if loaded is None or not _forget.current(handler, loaded):  # (folded before a forget seen since: again)
            loaded = await handler._load(stream, watch)
            fresh = True
            if loaded is None:  # the command's first event is in the stream: it ran meanwhile
                return await handler._prior_or_raise(stream, command_id)
        if expected is not None:
            if loaded.version is None and (expected is STREAM_EXISTS or type(expected) is int):
                await handler._refuse_tombstone(stream)  # as append: a tombstone is StreamDeleted, no conflict
            enforce_expected_version(stream, expected, loaded.version)
        if handler._is_terminal is not None and handler._is_terminal(loaded.state):
            if not fresh:  # no decision ran on it: confirm the cached state before refusing
                loaded = await handler._confirm(stream, loaded, watch)
                fresh = True
                continue
            raise StreamClosed(stream, loaded.version)
        decisions += 1
        job.decisions += 1  # the whole execution's count (a batch's decisions before it included)
        error: Exception | None = None
        try:
            events = decide_events(handler.decider, command, loaded.state, services)
        except Exception as exc:
            if fresh:
                if loaded.version is None:  # decided on an empty stream: a tombstone says so first
                    await handler._refuse_tombstone(stream)
                raise
            events, error = None, exc
        if not fresh and not events:  # an error or nothing to do, decided on the cached state
            current = await handler._confirm(stream, loaded, watch)
            if current is None:
                return await handler._prior_or_raise(stream, command_id)
            if (current.version, current.position, current.first_version) == (
                loaded.version,
                loaded.position,
                loaded.first_version,
            ):
                if error is not None:
                    raise error  # decided on the current state: the decider's own error stands
                return ExecuteResult(stream, loaded.version, loaded.position, [], loaded.state, decisions)
            else:  # the cached state was stale: a conflict detected before appending
                if decisions >= budget:
                    raise WrongExpectedVersion(stream, loaded.version, current.version)
                loaded, fresh = current, True
                continue
        if not events:
            if loaded.version is None:  # an empty stream, fresh: it may be a tombstone (DESIGN §8)
                await handler._refuse_tombstone(stream)
            return ExecuteResult(stream, loaded.version, loaded.position, [], loaded.state, decisions)
        new_events = handler._encode(stream, events, job.metadata, command_id)
        after_read = hidden if loaded.version is None else loaded.version  # None: no event at all
        guard = expected if expected is not None else (NO_STREAM if after_read is None else after_read)
        try:
            if handler._keys is not None:  # personal data: the keys sealed under exist before the events
                await handler._keys.save()
            appended = await handler._append(stream, new_events, guard, loaded)
        except WrongExpectedVersion as conflict:
            job.conflicts += 1
            if (prior := await handler._prior_result(stream, command_id)) is not None:
                return prior  # a concurrent execution of the same command id won
            # The version held, so the stream no longer starts where the state was folded from (a
            # truncation): fold anew and decide again, also under an explicit guard (which did hold).
            moved = conflict.actual == loaded.version
            if (explicit and not moved) or decisions >= (1 + handler.retries if explicit else budget):
                raise
            await asyncio.sleep(handler._delay(decisions - 1))
            loaded = await handler._fold(stream, None if moved else loaded, watch)
            fresh = True
            if loaded is None:
                return await handler._prior_or_raise(stream, command_id)
            # Read empty again, yet the stream has a version: its limits (a max_age every event is past)
            # hide all of it. Decide on what reads show, as before, guarded by that version.
            hidden = conflict.actual if loaded.version is None else None
            continue
        except DuplicateEventId:
            # A concurrent execution of the same command id won at another version.
            if (prior := await handler._prior_result(stream, command_id)) is not None:
                return prior
            raise
        # Another execution of this command id stored its events first, at this very place: its result
        # stands, whatever this decision made of them (a clock or another service may differ).
        if appended.replayed and (prior := await handler._prior_result(stream, command_id)) is not None:
            if handler.cache is not None:
                handler.cache.invalidate(stream)
            return prior
        state = loaded.state
        for event in events:
            state = handler.decider.evolve(state, event)
        # Written before execute returns (DESIGN §8); only after an exact guard (an int or NO_STREAM, never
        # ANY or STREAM_EXISTS), which proves that ``state`` is the state at the appended version.
        if handler._snapshots is not None and (guard is NO_STREAM or type(guard) is int):
            await handler._snapshots.after_append(stream, loaded, appended, len(new_events), state)
        first = None if loaded.version is None else loaded.first_version
        # Under ANY or STREAM_EXISTS other writers' events may sit between the state read and this append:
        # then ``state`` is the decision's view (the state read, plus its own events), never the stream's,
        # and must not be cached, or the next command would decide on it.
        read_to = -1 if after_read is None else after_read
        exact = appended.version == read_to + len(new_events) and _forget.current(handler, loaded)
        return handler._record(stream, state, events, new_events, appended, decisions, first, cache=exact)


class _Decided:
    """One queued command's decision in a batch attempt, settled once the attempt is confirmed."""

    __slots__ = ("closed", "encoded", "error", "events", "first", "queued", "result", "start", "state")

    def __init__(self, queued: Queued[Any], start: int, state: Any) -> None:
        self.queued = queued
        self.start = start  # the index of its first event in the batch
        self.state = state  # the state after its events
        self.events: list[Any] = []
        self.encoded: list[NewEvent] = []
        self.error: Exception | None = None
        self.closed = False  # decided on a terminal state: refused with StreamClosed
        self.first: _Decided | None = None  # the earlier command with the same command id
        self.result: ExecuteResult[Any, Any] | None = None


def _decide(
    handler: CommandHandler[Any, S, Any], stream: str, waiting: list[Queued[S]], base: CachedState[S]
) -> tuple[list[_Decided], list[NewEvent], S]:
    """Decide the commands in turn, each on the state the ones before it left; their events, and the last
    state. The commands after the first :data:`MAX_BATCH_BYTES` of events wait for the next append."""
    evolve, is_terminal = handler.decider.evolve, handler._is_terminal
    state = base.state
    decided: list[_Decided] = []
    new_events: list[NewEvent] = []
    size = 0
    firsts: dict[UUID, _Decided] = {}
    for queued in waiting:
        if size >= MAX_BATCH_BYTES:
            break
        job = queued.job
        outcome = _Decided(queued, len(new_events), state)
        decided.append(outcome)
        if job.watch is not None and (first := firsts.get(job.watch)) is not None:
            outcome.first = first  # a replay of a command id already in this batch: no second decision
            continue
        try:
            terminal = is_terminal is not None and is_terminal(state)
        except Exception as exc:  # the decider's own: this command's alone, as when it runs alone
            outcome.error = exc
            continue
        if terminal:
            outcome.closed = True
            continue
        job.decisions += 1
        try:
            events = decide_events(handler.decider, job.command, state, job.services)
            if not events:
                continue
            encoded = handler._encode(stream, events, job.metadata, job.command_id)
            after = state
            for event in events:
                after = evolve(after, event)
        except Exception as exc:  # the decider's, the codec's or evolve's: this command's alone
            outcome.error = exc
            continue
        outcome.events, outcome.encoded, outcome.state = events, encoded, after
        new_events += encoded
        size += sum(len(event.data) + len(event.metadata) for event in encoded)
        state = after
        if job.watch is not None:
            firsts[job.watch] = outcome
    return decided, new_events, state


def _settle(
    handler: CommandHandler[Any, S, Any],
    stream: str,
    decided: list[_Decided],
    base: CachedState[S],
    appended: AppendResult | None,
    total: int,
    states: dict[int | None, S] | None,
) -> None:
    """Give every command of a confirmed attempt its result: its events, version and state (``states``: after a forget)."""
    first_version = 0 if appended is None or appended.version is None else appended.version - total + 1
    for outcome in decided:
        queued, start = outcome.queued, outcome.start
        if outcome.first is not None:
            assert outcome.first.result is not None  # settled before: it came first
            queued.settle(outcome.first.result)
            continue
        if start and appended is not None:  # after events of this batch
            version_before: int | None = first_version + start - 1
            position_before = appended.positions[start - 1]
        else:
            version_before, position_before = base.version, base.position
        if outcome.closed:
            queued.settle(StreamClosed(stream, version_before))
        elif outcome.error is not None:
            queued.settle(outcome.error)
        elif outcome.events and appended is not None:
            end = start + len(outcome.events)
            own = AppendResult(
                stream,
                first_version + end - 1,
                appended.positions[end - 1],
                appended.positions[start:end],
                appended.recorded_at,
            )
            first = base.first_version if base.version is not None else first_version
            state = outcome.state if states is None else states[own.version]
            outcome.result = handler._record(
                stream, state, outcome.events, outcome.encoded, own, queued.job.decisions, first, states is None
            )
            queued.settle(outcome.result)
        else:
            state = outcome.state if states is None else states[version_before]
            queued.settle(ExecuteResult(stream, version_before, position_before, [], state, queued.job.decisions))


async def _settle_replays(handler: CommandHandler[Any, S, Any], stream: str, waiting: list[Queued[S]]) -> bool:
    """Settle the commands whose command id has run meanwhile (another process) with that first result."""
    found = False
    done: set[UUID] = set()
    for queued in waiting:
        job = queued.job
        if job.command_id is None or job.watch is None or job.watch in done or queued.future.done():
            continue
        done.add(job.watch)
        prior = await handler._prior_result(stream, job.command_id)
        if prior is not None:
            found = True
            for other in waiting:
                if other.job.watch == job.watch:
                    other.settle(prior)
    return found


def _spend(waiting: list[Queued[S]], budget: int, conflict: WrongExpectedVersion) -> None:
    for queued in waiting:
        if queued.job.decisions >= budget:
            queued.settle(conflict)


async def _one_by_one(handler: CommandHandler[Any, S, Any], stream: str, waiting: list[Queued[S]]) -> None:
    # After a refusal the store gives the whole batch (an event it will not take): each command alone,
    # so the refusal reaches only the command it is about.
    for queued in waiting:
        if queued.future.done():
            continue
        try:
            queued.settle(await _forget.alone(handler, stream, queued.job, None))
        except Exception as exc:
            queued.settle(exc)


async def batch(
    handler: CommandHandler[Any, S, Any],
    stream: str,
    waiting: list[Queued[S]],
    refill: Callable[[], None],
    carried: CachedState[S] | None,
) -> CachedState[S] | None:
    """Run the commands queued on ``stream`` as one batch (see the module docstring); settle each of them.

    Starts from the cached state (or ``carried``, the state the stream's previous batch left) and returns
    the state it leaves, for the next batch.
    """
    base = handler.cache.get(stream) if handler.cache is not None else None
    base = base or carried
    fresh = base is None
    budget = 1 + handler.retries
    conflicts = 0
    hidden: int | None = None  # as in ``alone``: the version of a stream its limits hide all of
    while True:
        waiting[:] = [queued for queued in waiting if not queued.future.done()]
        if not waiting:
            return base
        if base is None or not _forget.current(handler, base):  # (folded before a forget seen since: again)
            base = await handler._fold(stream, None)
            assert base is not None  # nothing is watched
            fresh = True
        decided, new_events, state = _decide(handler, stream, waiting, base)
        if not new_events:  # nothing to append: confirm a cached state by one read before it stands
            if base.version is None:  # an empty stream: it may be a tombstone (DESIGN §8)
                await handler._refuse_tombstone(stream)
            if not fresh:
                current = await handler._confirm(stream, base)
                assert current is not None
                if (current.version, current.position, current.first_version) != (
                    base.version,
                    base.position,
                    base.first_version,
                ):
                    _spend(waiting, budget, WrongExpectedVersion(stream, base.version, current.version))
                    base, fresh = current, True
                    continue
            states = await _forget.refolded(handler, stream, base.generation, base.version, base.version)
            _settle(handler, stream, decided, base, None, 0, states)
            return base
        try:
            if handler._keys is not None:  # personal data: the keys sealed under exist before the events
                await handler._keys.save()
            after_read = hidden if base.version is None else base.version
            appended = await handler._append(stream, new_events, NO_STREAM if after_read is None else after_read, base)
        except WrongExpectedVersion as conflict:
            conflicts += 1
            for queued in waiting:
                queued.job.conflicts += 1
            await _settle_replays(handler, stream, waiting)
            _spend(waiting, budget, conflict)
            if any(not queued.future.done() for queued in waiting):
                await asyncio.sleep(handler._delay(conflicts - 1))
            refill()
            if all(queued.future.done() for queued in waiting):
                return None  # every command is settled: nobody is left to catch up for
            # The version held, so the stream no longer starts where the state was folded from: fold anew.
            base = await handler._fold(stream, None if conflict.actual == base.version else base)
            fresh = True
            hidden = conflict.actual if base is not None and base.version is None else None
            continue
        except DuplicateEventId:  # a command id that ran meanwhile, at another version
            if not await _settle_replays(handler, stream, waiting):
                await _one_by_one(handler, stream, waiting)
                return None
            continue
        except InvalidEvent:
            await _one_by_one(handler, stream, waiting)
            return None
        # Stored already, by commands with ids only (a random id is never stored twice: that would be the
        # store's own retry of this append): executions elsewhere came first, and their results stand.
        replays = appended.replayed and all(o.queued.job.command_id for o in decided if o.events)
        if replays and await _settle_replays(handler, stream, waiting):
            if handler.cache is not None:
                handler.cache.invalidate(stream)
            base, fresh, hidden = await handler._fold(stream, None), True, None  # the rest decide again
            continue
        if handler._snapshots is not None:  # before any command of the batch returns
            await handler._snapshots.after_append(stream, base, appended, len(new_events), state)
        states = await _forget.refolded(handler, stream, base.generation, base.version, appended.version)
        _settle(handler, stream, decided, base, appended, len(new_events), states)
        assert appended.version is not None
        # Where the state after the append was folded from: its base's start, or its first new event.
        first = base.first_version if base.version is not None else appended.version - len(new_events) + 1
        after = CachedState(state, appended.version, appended.position, first, base.generation)
        if len(decided) == len(waiting):
            return after
        base, fresh, hidden = after, False, None  # past MAX_BATCH_BYTES: the rest (unsettled) append next
