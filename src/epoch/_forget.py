"""Personal data in a :class:`~epoch.commands.CommandHandler`: no state folded before a forget outlives it.

Every state the handler folds is tagged with the key generation it was decoded under
(:attr:`KeyStore.generation <epoch.KeyStore.generation>`, which grows with each forget the process sees:
its own at once, another process's when the key store revalidates). A fold that a forget overtakes folds
again, and a state of an older generation is never cached, carried to a busy stream's next batch or
decided on: the handler folds the stream again first. A command that decided before the forget landed
(its events are sealed under the erased key) gets, when the forget was seen before it returns, its state
folded again from the stream: what it returns reads the forgotten fields redacted too.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from epoch._idempotency import closing
from epoch._results import ExecuteResult, Job
from epoch.cache import CachedState
from epoch.domain import initial_state_of
from epoch.personal import preloading
from epoch.records import ExpectedVersionLike

if TYPE_CHECKING:
    from epoch.commands import CommandHandler

__all__ = ["alone", "current", "forgotten", "generation", "refolded"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


def generation(handler: CommandHandler[Any, Any, Any]) -> int:
    """The key generation the handler's codec decodes under now (always 0 without personal data)."""
    return 0 if handler._keys is None else handler._keys.generation


def current(handler: CommandHandler[Any, Any, Any], state: CachedState[Any]) -> bool:
    """Whether ``state`` was folded after the last forget the handler's key store has seen."""
    return handler._keys is None or state.generation == handler._keys.generation


async def forgotten(handler: CommandHandler[Any, Any, Any]) -> None:
    """After a forget (anywhere), drop the cached states, which were decided on the forgotten values."""
    if handler._keys is None:
        return
    await handler._keys.refresh()
    if handler._keys.generation != handler._key_generation and handler.cache is not None:
        handler.cache.invalidate()
    handler._key_generation = handler._keys.generation


async def alone(
    handler: CommandHandler[C, S, E], stream: str, job: Job[C], expected: ExpectedVersionLike
) -> ExecuteResult[S, E]:
    """``epoch._run.alone``, its result's state folded again when a forget was seen while it ran."""
    from epoch import _run

    since = generation(handler)
    result = await _run.alone(handler, stream, job, expected)
    states = await refolded(handler, stream, since, result.version, result.version)
    return result if states is None else dataclasses.replace(result, state=states[result.version])


async def refolded(
    handler: CommandHandler[Any, S, Any], stream: str, since: int, low: int | None, high: int | None
) -> dict[int | None, S] | None:
    """``None`` when no forget was seen since generation ``since``; else the states after the versions
    ``low`` to ``high`` (``None``: the initial state), folded again from the stream's first event, so a
    forgotten subject's fields read redacted. A version the read no longer shows (hidden since) gets the
    state before it."""
    if generation(handler) == since:
        return None
    keys = handler._keys
    assert keys is not None  # without personal data the generation never moves
    while True:
        since = keys.generation
        state = before = initial_state_of(handler.decider)  # ``before``: the state before ``low``
        states: dict[int | None, S] = {None: state}
        if high is None:
            return states
        start = -1 if low is None else low
        evolve, decode = handler.decider.evolve, handler.codec.decode_data
        async with closing(preloading(keys, handler.store.read_stream(stream))) as events:
            async for recorded in events:
                if recorded.version > high:
                    break
                state = evolve(state, decode(recorded))
                if recorded.version >= start:
                    states[recorded.version] = state
                else:
                    before = state
        if keys.generation == since:  # (else another forget overtook this fold: again)
            break
    for version in range(max(start, 0), high + 1):
        before = states.setdefault(version, before)
    return states
