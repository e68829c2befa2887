"""A cached ``CommandHandler`` never decides on events that anyone deleted or truncated (DESIGN §8), and
``load``/``execute`` raise ``StreamDeleted`` on a tombstone. "Anyone" is a second store on the same
database (its own connections, as another process has) for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from epoch import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    CommandHandler,
    Decider,
    EventStore,
    ExpectedVersion,
    StreamDeleted,
    WrongExpectedVersion,
    open_store,
)
from epoch.codec import Codec
from epoch.testing import collect

pytestmark = [pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Add:
    n: int


@dataclass(frozen=True)
class Peek:
    """Decides nothing."""


@dataclass(frozen=True)
class Added:
    n: int


def decide(command: object, state: tuple[int, ...]) -> list[Added]:
    return [Added(command.n)] if isinstance(command, Add) else []


def evolve(state: tuple[int, ...], event: Added) -> tuple[int, ...]:
    return (*state, event.n)


tally: Decider[object, tuple[int, ...], Added] = Decider(decide, evolve, ())
codec: Codec[Added] = Codec([Added])


def handler_on(store: EventStore, **options: Any) -> CommandHandler[object, tuple[int, ...], Added]:
    return CommandHandler(store, tally, "tally", codec, **options)


@pytest.fixture
async def other(store: EventStore, store_url: str) -> AsyncIterator[EventStore]:
    """Someone else: another store on the same database (the memory store has only itself)."""
    if store_url.startswith("memory:"):
        yield store
        return
    async with open_store(store_url) as opened:
        yield opened


async def cached(store: EventStore, values: range) -> CommandHandler[object, tuple[int, ...], Added]:
    handler = handler_on(store)
    for n in values:
        await handler.execute("1", Add(n))
    assert handler.cache is not None and len(handler.cache) == 1
    return handler


async def test_a_truncation_by_another_is_never_decided_on(store: EventStore, other: EventStore) -> None:
    handler = await cached(store, range(4))
    await other.truncate_before("tally-1", 2)
    result = await handler.execute("1", Add(9))
    assert (result.state, result.version, result.attempts) == ((2, 3, 9), 4, 2)  # the cached decision was refused
    assert await handler.load("1") == ((2, 3, 9), 4)
    assert await handler_on(store, cache=None).load("1") == ((2, 3, 9), 4)


async def test_an_empty_decision_after_a_truncation_reads_the_truncated_state(
    store: EventStore, other: EventStore
) -> None:
    handler = await cached(store, range(3))
    await other.truncate_before("tally-1", 1)
    result = await handler.execute("1", Peek())
    assert (result.state, result.version, result.events) == ((1, 2), 2, [])
    assert await handler.load("1") == ((1, 2), 2)


async def test_a_batch_after_a_truncation(store: EventStore, other: EventStore) -> None:
    handler = await cached(store, range(3))
    await other.truncate_before("tally-1", 2)
    results = await asyncio.gather(*(handler.execute("1", Add(10 + i)) for i in range(6)))
    assert sorted(r.version or 0 for r in results) == [3, 4, 5, 6, 7, 8]
    stored = [codec.decode(e).data.n for e in await collect(store.read_stream("tally-1"))]
    assert stored == [2, *sorted(stored[1:])] and len(stored) == 7
    last = max(results, key=lambda r: r.version or 0)
    assert last.state == tuple(stored)  # decided on what is stored, nothing truncated
    assert await handler.load("1") == (tuple(stored), 8)


async def test_a_scavenge_by_another_is_never_decided_on(store: EventStore, other: EventStore) -> None:
    handler = await cached(store, range(4))
    await other.set_stream_limits("tally-1", max_count=2)
    assert await other.scavenge() == 2
    result = await handler.execute("1", Add(9))
    assert (result.state, result.attempts) == ((2, 3, 9), 2)
    assert await handler.load("1") == ((3, 9), 4)  # the limit keeps the newest two


async def test_a_tombstone_by_another_refuses_every_command(store: EventStore, other: EventStore) -> None:
    handler = await cached(store, range(2))
    await other.delete_stream("tally-1", hard=True)
    for command in (Add(3), Peek()):
        with pytest.raises(StreamDeleted) as info:
            await handler.execute("1", command)
        assert str(info.value) == "tally-1: the stream is deleted (last version 1)"
    with pytest.raises(StreamDeleted):
        await handler.load("1")
    fresh = handler_on(store, cache=None)
    for command in (Add(3), Peek()):
        with pytest.raises(StreamDeleted):
            await fresh.execute("1", command)
    with pytest.raises(StreamDeleted):
        await fresh.execute("1", Add(3), None)  # an explicit expected version too
    with pytest.raises(StreamDeleted):
        await fresh.load("1")
    assert await collect(store.read_all()) == []


@pytest.mark.parametrize("expected", [0, 1, 5, STREAM_EXISTS, NO_STREAM, ANY])
@pytest.mark.parametrize("command", [Add(3), Peek()])
async def test_a_tombstone_refuses_a_command_whatever_its_expected_version(
    store: EventStore, expected: ExpectedVersion | int, command: object
) -> None:
    # As store.append does: a guard a tombstone cannot satisfy is StreamDeleted (HTTP 410), never
    # WrongExpectedVersion (412), on a fresh handler and on one that cached the stream.
    warm = await cached(store, range(2))
    await store.delete_stream("tally-1", hard=True)
    for handler in (warm, handler_on(store, cache=None)):
        with pytest.raises(StreamDeleted) as info:
            await handler.execute("1", command, expected)
        assert str(info.value) == "tally-1: the stream is deleted (last version 1)"
    assert await store.stream_version("tally-1") is None


async def test_an_empty_stream_still_answers_its_guard(store: EventStore) -> None:
    handler = handler_on(store)
    for expected in (0, STREAM_EXISTS):
        with pytest.raises(WrongExpectedVersion) as info:
            await handler.execute("1", Add(1), expected)
        assert (info.value.expected, info.value.actual) == (expected, None)
    await store.append("tally-2", [codec.encode(Added(1))])
    await store.delete_stream("tally-2")  # a soft delete reads as empty, and is no tombstone
    with pytest.raises(WrongExpectedVersion) as soft:
        await handler.execute("2", Add(2), 0)
    assert (soft.value.expected, soft.value.actual) == (0, None)
    assert (await handler.execute("2", Add(2), NO_STREAM)).version == 1


async def test_a_new_stream_loads_as_before(store: EventStore) -> None:
    handler = handler_on(store)
    assert await handler.load("1") == ((), None)
    result = await handler.execute("1", Peek())
    assert (result.state, result.version, result.events) == ((), None, [])


class Wrapped:
    """A store behind a user's wrapper that overrides ``append``: the handler must go through it."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, *args: Any) -> Any:
        self.appends += 1
        return await self.store.append(*args)


async def test_a_wrapped_store_gets_every_append_and_the_same_check(store: EventStore, other: EventStore) -> None:
    wrapped = Wrapped(store)
    handler = await cached(wrapped, range(4))
    await other.truncate_before("tally-1", 2)
    result = await handler.execute("1", Add(9))
    assert (result.state, result.attempts) == ((2, 3, 9), 2)
    assert wrapped.appends == 5  # four, one refused before it reached the store, then the fifth


async def test_an_explicit_guard_that_holds_decides_again_after_a_truncation(
    store: EventStore, other: EventStore
) -> None:
    handler = await cached(store, range(4))
    await other.truncate_before("tally-1", 3)
    result = await handler.execute("1", Add(9), 3)  # the guard holds: only the stream's start moved
    assert (result.state, result.version, result.attempts) == ((3, 9), 4, 2)
    await other.truncate_before("tally-1", 4)
    anyhow = await handler.execute("1", Add(10), ANY)
    assert (anyhow.state, anyhow.version, anyhow.attempts) == ((9, 10), 5, 2)
    with pytest.raises(WrongExpectedVersion) as stale:
        await handler.execute("1", Add(11), 4)  # a guard that does not hold is checked once, as ever
    assert (stale.value.expected, stale.value.actual) == (4, 5)


async def in_another_process(url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.lifecycle_worker", url, *args, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


async def test_another_os_process_truncating_scavenging_and_tombstoning(sql_store_url: str) -> None:
    async with open_store(sql_store_url) as store:
        handler = await cached(store, range(5))
        assert await in_another_process(sql_store_url, "truncate", "tally-1", "2") == "None"
        result = await handler.execute("1", Add(9))
        assert (result.state, result.attempts) == ((2, 3, 4, 9), 2)
        assert await in_another_process(sql_store_url, "limit", "tally-1", "2") == "2"
        result = await handler.execute("1", Add(10))
        assert (result.state, result.attempts) == ((4, 9, 10), 2)
        assert await in_another_process(sql_store_url, "tombstone", "tally-1") == "None"
        with pytest.raises(StreamDeleted):
            await handler.execute("1", Add(11))
        with pytest.raises(StreamDeleted):
            await handler.load("1")
