"""The memory store lets the event loop run between appends: a task looping on ``execute`` (or on
``append``) never starves the loop's other tasks, timeouts and servers (as the SQLite store's lone
append yields once). Counted in loop turns, not wall time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from epoch import CommandHandler, Decider, NewEvent
from epoch.codec import Codec
from epoch.queries import AppendCondition, Query
from epoch.stores.memory import MemoryEventStore

pytestmark = [pytest.mark.asyncio]

COMMANDS = 400


@dataclass(frozen=True)
class Add:
    pass


@dataclass(frozen=True)
class Added:
    pass


counter: Decider[Add, int, Added] = Decider(lambda command, state: [Added()], lambda state, event: state + 1, 0)
codec: Codec[Added] = Codec([Added])


async def ticks_during(work: Callable[[int], Awaitable[object]]) -> int:
    """How many turns a concurrent task got while ``work(i)`` ran ``COMMANDS`` times in a loop."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker starts
    start = ticks
    for i in range(COMMANDS):
        await work(i)
    done = True
    await task
    return ticks - start


async def test_a_loop_of_commands_lets_other_tasks_run() -> None:
    async with MemoryEventStore() as store:
        handler = CommandHandler(store, counter, "count", codec)
        ticks = await ticks_during(lambda i: handler.execute("1", Add()))
        assert ticks >= COMMANDS  # at least one turn per command (it was 0)
        assert (await handler.load("1")).state == COMMANDS  # and the results are the same


async def test_a_loop_of_idempotent_commands_lets_other_tasks_run() -> None:
    async with MemoryEventStore() as store:
        handler = CommandHandler(store, counter, "count", codec, cache=None)
        assert await ticks_during(lambda i: handler.execute("1", Add(), command_id=f"c-{i}")) >= COMMANDS


@pytest.mark.parametrize("kind", ["append", "append_with_condition", "append_many"])
async def test_a_loop_of_appends_lets_other_tasks_run(kind: str) -> None:
    async with MemoryEventStore() as store:

        async def work(i: int) -> object:
            events = [NewEvent("Added", b"{}")]
            if kind == "append":
                return await store.append("s-1", events, i - 1 if i else None)
            if kind == "append_with_condition":
                return await store.append_with_condition("s-1", events, AppendCondition(Query(), None))
            return await store.append_many([("s-1", events, i - 1 if i else None)])

        assert await ticks_during(work) >= COMMANDS
        assert await store.stream_version("s-1") == COMMANDS - 1


async def test_a_timeout_interrupts_a_loop_of_commands() -> None:
    async with MemoryEventStore() as store:
        handler = CommandHandler(store, counter, "count", codec)
        ran = 0

        async def forever() -> None:
            nonlocal ran
            while ran < 50_000:  # bounded, so that a loop that cannot be interrupted still ends
                await handler.execute("1", Add())
                ran += 1

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(forever(), timeout=0.01)
        assert ran < 50_000
