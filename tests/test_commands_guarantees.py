"""CommandHandler under attack (issue 8): retries counted truly, caches that survive no delete, command ids
executed twice at once, bad time-travel arguments. Every test runs on every store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from epoch import (
    ANY,
    STREAM_EXISTS,
    Codec,
    CommandHandler,
    Decider,
    EventStore,
    InvalidVersion,
    ResultUnavailable,
    StreamClosed,
    WrongExpectedVersion,
    open_store,
)
from epoch.records import AppendResult, ExpectedVersionLike, NewEvent
from tests.test_commands import (
    Account,
    Close,
    Closed,
    Deposit,
    Deposited,
    Open,
    RacingStore,
    Refused,
    codec,
    decide,
    evolve,
    handler_for,
)

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    """The accounts decider, counting how many times ``decide`` ran."""

    def __init__(self) -> None:
        self.decisions = 0
        self.initial_state = Account()

    def decide(self, command: object, state: Account, services: Any = None) -> list[object]:
        self.decisions += 1
        return decide(command, state, services)

    def evolve(self, state: Account, event: object) -> Account:
        return evolve(state, event)

    def is_terminal(self, state: Account) -> bool:
        return state.closed


def counting_handler(store: Any, **options: Any) -> tuple[CommandHandler[object, Account, object], Counting]:
    decider = Counting()
    return CommandHandler(store, decider, "account", codec, **options), decider


# -- item 8: retries and attempts are the true number of decisions --------------------------------


async def test_retries_zero_decides_once_on_a_stale_cache(store: EventStore) -> None:
    handler, decider = counting_handler(RacingStore(store, interfere=0), retries=0)
    await handler.execute("1", Open("ada"))
    handler.store.interfere = 1  # type: ignore[attr-defined]  # one write lands before our next append
    decider.decisions = 0
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute("1", Deposit(10))
    assert decider.decisions == 1
    assert (info.value.stream, info.value.expected, info.value.actual) == ("account-1", 0, 1)
    assert str(info.value) == "account-1: expected version 0, actual 1"
    assert await store.stream_version("account-1") == 1  # only the interfering write


async def test_attempts_count_the_cached_decision(store: EventStore) -> None:
    racing = RacingStore(store, interfere=0)
    handler, decider = counting_handler(racing, retries=3)
    await handler.execute("1", Open("ada"))
    racing.interfere = 1
    decider.decisions = 0
    result = await handler.execute("1", Deposit(10))
    assert (result.attempts, decider.decisions) == (2, 2)
    assert result.state == Account("ada", 11, 2)
    assert result.version == 2


async def test_retries_run_out_after_exactly_one_plus_retries_decisions(store: EventStore) -> None:
    racing = RacingStore(store, interfere=0)
    handler, decider = counting_handler(racing, retries=2)
    await handler.execute("1", Open("ada"))
    racing.interfere = 10
    decider.decisions = 0
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute("1", Deposit(10))
    assert decider.decisions == 3
    assert racing.interfere == 7
    assert (info.value.expected, info.value.actual) == (2, 3)


async def test_an_error_on_a_current_cache_is_decided_once(store: EventStore) -> None:
    handler, decider = counting_handler(store, retries=0)
    await handler.execute("1", Open("ada"))
    decider.decisions = 0
    with pytest.raises(Refused, match="^amount must be positive$"):
        await handler.execute("1", Deposit(-1))
    assert decider.decisions == 1
    empty = await handler.execute("1", Open("ada"))
    assert (empty.events, empty.version, empty.attempts, decider.decisions) == ([], 0, 1, 2)


async def test_an_error_on_a_stale_cache_is_decided_again_on_fresh_state(store: EventStore) -> None:
    await store.append("account-1", [codec.encode(Deposited(1))])  # a stream not opened yet
    handler, decider = counting_handler(store, retries=1)
    assert await handler.load("1") == (Account(None, 1, 1), 0)  # cached: Deposit would be refused
    await handler_for(store, cache=None).execute("1", Open("bob"))  # elsewhere
    result = await handler.execute("1", Deposit(3))
    assert (result.state, result.version) == (Account("bob", 4, 2), 2)
    assert (result.attempts, decider.decisions) == (2, 2)


async def test_an_error_on_a_stale_cache_with_no_retries_left_is_a_conflict(store: EventStore) -> None:
    await store.append("account-1", [codec.encode(Deposited(1))])
    handler, decider = counting_handler(store, retries=0)
    await handler.load("1")
    await handler_for(store, cache=None).execute("1", Open("bob"))
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute("1", Deposit(3))
    assert str(info.value) == "account-1: expected version 0, actual 1"
    assert decider.decisions == 1
    assert await store.stream_version("account-1") == 1


async def test_a_stale_terminal_cache_after_re_creation_decides_on_fresh_state(store: EventStore) -> None:
    handler, decider = counting_handler(store, retries=0)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Close())
    await store.delete_stream("account-1")
    await handler_for(store, cache=None).execute("1", Open("bob"))  # re-created elsewhere: open
    decider.decisions = 0
    result = await handler.execute("1", Deposit(3))
    assert result.state == Account("bob", 3, 1)
    assert (result.version, result.attempts, decider.decisions) == (3, 1, 1)


async def test_a_stale_terminal_cache_does_not_refuse(store: EventStore) -> None:
    handler, _ = counting_handler(store, retries=0)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Close())
    with pytest.raises(StreamClosed) as info:
        await handler.execute("1", Deposit(1))
    assert (info.value.stream, info.value.version) == ("account-1", 1)
    await store.delete_stream("account-1")
    await handler_for(store, cache=None).execute("1", Open("bob"))
    result = await handler.execute("1", Deposit(1))
    assert (result.state, result.version, result.attempts) == (Account("bob", 1, 1), 3, 1)


# -- item 3: a cache never survives a delete -------------------------------------------------------


async def test_cache_reloads_after_delete_and_recreation(store: EventStore) -> None:
    cached = handler_for(store)
    other = handler_for(store, cache=None)  # another handler, e.g. in another process
    await cached.execute("1", Open("ada"))
    await cached.execute("1", Deposit(1))
    await store.delete_stream("account-1")
    await other.execute("1", Open("bob"))
    assert await cached.load("1") == (Account("bob"), 2)
    result = await cached.execute("1", Deposit(100))
    assert result.state == Account("bob", 100, 1)
    assert result.version == 3
    assert (await other.load("1")).state == Account("bob", 100, 1)


async def test_cache_reloads_after_delete(store: EventStore) -> None:
    cached = handler_for(store)
    await cached.execute("1", Open("ada"))
    await cached.execute("1", Deposit(1))
    await store.delete_stream("account-1")
    assert await cached.load("1") == (Account(), None)
    with pytest.raises(Refused, match="^not opened$"):
        await cached.execute("1", Deposit(1))
    assert await store.stream_version("account-1") is None


async def test_cache_reloads_after_delete_and_recreation_to_the_same_length(store: EventStore) -> None:
    cached = handler_for(store)
    await cached.execute("1", Open("ada"))
    await store.delete_stream("account-1")
    other = handler_for(store, cache=None)
    await other.execute("1", Open("bob"))
    await other.execute("1", Deposit(7))
    result = await cached.execute("1", Deposit(1))
    assert (result.state, result.version) == (Account("bob", 8, 2), 3)


# -- item 4: one command id executed twice at once ------------------------------------------------


class BarrierStore:
    """A real store whose first append waits until every racer has decided: a deterministic race."""

    def __init__(self, store: EventStore, barrier: asyncio.Barrier) -> None:
        self.store = store
        self.barrier = barrier
        self.waited = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = None
    ) -> AppendResult:
        if not self.waited:
            self.waited = True
            await self.barrier.wait()
        return await self.store.append(stream, events, expected_version)

    def read_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self.store.read_stream(*args, **kwargs)


@pytest.mark.parametrize("cache", [True, None])
async def test_racing_executions_of_one_command_id_decide_once_each_and_agree(
    store: EventStore, cache: bool | None
) -> None:
    await handler_for(store).execute("1", Open("ada"))
    barrier = asyncio.Barrier(4)
    handlers = [counting_handler(BarrierStore(store, barrier), cache=cache, retries=5) for _ in range(4)]
    for handler, _ in handlers:  # warm each cache (when there is one)
        await handler.load("1")
    results = await asyncio.gather(*(h.execute("1", Close(), command_id="close-1") for h, _ in handlers))
    assert {(r.version, r.position) for r in results} == {(1, results[0].position)}
    assert {r.state for r in results} == {Account("ada", 0, 0, True)}
    assert [[e.data for e in r.events] for r in results] == [[Closed()]] * 4
    assert [d.decisions for _, d in handlers] == [1, 1, 1, 1]  # nobody re-decided on the closed state
    assert await store.stream_version("account-1") == 1


async def test_a_command_id_seen_in_the_loaded_stream_is_not_decided_again(store: EventStore) -> None:
    first = await handler_for(store).execute("1", Open("ada"), command_id="open-1")
    handler, decider = counting_handler(store, cache=None)
    await handler_for(store).execute("1", Deposit(1))
    again = await handler.execute("1", Open("ada"), command_id="open-1")
    assert decider.decisions == 0
    assert (again.version, again.position, again.state) == (0, first.position, Account("ada"))
    assert [e.id for e in again.events] == [e.id for e in first.events]


class WinnerAfterPriorCheck:
    """A real store on which another execution of the command wins right after our prior-result check."""

    def __init__(self, store: EventStore, winner: Any) -> None:
        self.store = store
        self.winner = winner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_event(self, *args: Any, **kwargs: Any) -> Any:
        found = await self.store.get_event(*args, **kwargs)
        if self.winner is not None:
            winner, self.winner = self.winner, None
            await winner()
        return found

    def read_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self.store.read_stream(*args, **kwargs)


@pytest.mark.parametrize("cache", [True, None])
async def test_a_command_id_that_wins_elsewhere_meanwhile_returns_its_result(
    store: EventStore, cache: bool | None
) -> None:
    await handler_for(store).execute("1", Open("ada"))
    winner = handler_for(store, cache=None)
    results: list[Any] = []

    async def win() -> None:
        results.append(await winner.execute("1", Close(), command_id="close-1"))

    loser, decider = counting_handler(WinnerAfterPriorCheck(store, win), cache=cache, retries=3)
    if cache:
        await loser.load("1")
    lost = await loser.execute("1", Close(), command_id="close-1")
    [won] = results
    assert (
        (lost.version, lost.position, lost.state)
        == (won.version, won.position, won.state)
        == (
            1,
            won.position,
            Account("ada", 0, 0, True),
        )
    )
    assert [(e.id, e.data) for e in lost.events] == [(e.id, e.data) for e in won.events]
    assert decider.decisions == (1 if cache else 0)  # never decided on the closed state
    assert await store.stream_version("account-1") == 1


@pytest.mark.slow
async def test_processes_racing_one_command_id_return_the_first_result(sql_store_url: str) -> None:
    url = sql_store_url
    async with open_store(url) as store:
        await handler_for(store).execute("1", Open("ada"))
    start = datetime.now(UTC).timestamp() + 2.0  # every process decides, then all append at once
    script = (
        "import asyncio, sys, time\n"
        "from epoch import open_store\n"
        "from tests.test_commands import Close, handler_for\n"
        "async def main():\n"
        "    async with open_store(sys.argv[1]) as store:\n"
        "        handler = handler_for(store)\n"
        "        await handler.load('1')\n"
        "        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "        r = await handler.execute('1', Close(), command_id='close-1')\n"
        "        print(r.version, r.position, r.attempts)\n"
        "asyncio.run(main())\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=120) for w in workers))
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    async with open_store(url) as store:
        [closed] = [e async for e in store.read_stream("account-1", from_version=1)]
    assert {out.split()[0] + " " + out.split()[1] for out, _ in outputs} == {f"1 {closed.position}"}


# -- item 6: time travel refuses what is not a version or an aware datetime -----------------------


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("2024-01-01T00:00:00+00:00", "account-1: invalid version '2024-01-01T00:00:00+00:00' (stream version 0)"),
        (1700000000, "account-1: invalid version 1700000000 (stream version 0)"),
        (datetime(2024, 1, 1), "account-1: invalid version datetime.datetime(2024, 1, 1, 0, 0) (stream version 0)"),
    ],
)
async def test_state_at_refuses_a_bad_instant(store: EventStore, at: Any, message: str) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    with pytest.raises(InvalidVersion) as info:
        await handler.state_at("1", at=at)
    assert str(info.value) == message


@pytest.mark.parametrize("version", [-1, True, 1.0, "0", 2**63, 2**100])
async def test_state_at_refuses_a_bad_version(store: EventStore, version: Any) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    with pytest.raises(InvalidVersion) as info:
        await handler.state_at("1", version=version)
    assert str(info.value) == f"account-1: invalid version {version!r} (stream version 0)"
    assert (info.value.requested, info.value.actual) == (version, 0)


async def test_state_at_on_an_unwritten_stream(store: EventStore) -> None:
    handler = handler_for(store)
    assert await handler.state_at("1") == Account()
    with pytest.raises(InvalidVersion) as info:
        await handler.state_at("1", version=0)
    assert str(info.value) == "account-1: invalid version 0 (stream version no stream)"


async def test_a_command_id_after_its_stream_was_deleted_returns_the_first_events(store: EventStore) -> None:
    handler = handler_for(store)
    first = await handler.execute("1", Open("ada"), command_id="open-1")
    await store.delete_stream("account-1")
    again = await handler_for(store, cache=None).execute("1", Open("ada"), command_id="open-1")
    assert (again.version, again.position) == (0, first.position)
    assert [(e.id, e.data, e.version) for e in again.events] == [(e.id, e.data, e.version) for e in first.events]
    assert again.state == first.state  # it started the stream: the state after it, as the first execution had it
    assert await store.stream_version("account-1") is None  # and nothing was written


async def test_a_command_id_after_its_stream_was_deleted_past_it_cannot_fold_its_state(store: EventStore) -> None:
    """Soft-deleted events before the command's own are not read again: no honest state after it (docs/lifecycle.md)."""
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    first = await handler.execute("1", Deposit(2), command_id="dep-1")
    await store.delete_stream("account-1")
    with pytest.raises(ResultUnavailable) as info:
        await handler_for(store, cache=None).execute("1", Deposit(2), command_id="dep-1")
    assert info.value.args == ("account-1", "dep-1", 1, first.position)
    assert await store.stream_version("account-1") is None  # nothing was written


# -- an explicit ANY or STREAM_EXISTS never leaves a cached state the stream does not hold -------------


@pytest.mark.parametrize("guard", [ANY, STREAM_EXISTS])
async def test_a_loose_guard_after_other_writes_caches_nothing(store: EventStore, guard: ExpectedVersionLike) -> None:
    """Another writer's deposit lands between the read and an append under ``ANY`` (or ``STREAM_EXISTS``):
    the append holds, but the decided state misses that deposit, so it must not become the cached state
    the next command decides on."""
    handler = handler_for(RacingStore(store, 0), cache=True)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Deposit(10))
    assert handler.cache is not None and handler.cache.get("account-1") is not None
    handler.store.interfere = 1  # type: ignore[attr-defined]
    loose = await handler.execute("1", Deposit(5), expected_version=guard)
    assert (loose.version, loose.state) == (3, Account("ada", 15, 2))  # the decision's view: read + own event
    assert handler.cache.get("account-1") is None
    after = await handler.execute("1", Deposit(1))
    assert (after.version, after.state) == (4, Account("ada", 17, 4))  # decided on the stream's state
    assert (await handler.load("1")).state == Account("ada", 17, 4)


async def test_a_loose_guard_with_no_other_write_keeps_the_cache(store: EventStore) -> None:
    handler = handler_for(store, cache=True)
    await handler.execute("1", Open("ada"))
    result = await handler.execute("1", Deposit(5), expected_version=ANY)
    assert handler.cache is not None
    cached = handler.cache.get("account-1")
    assert cached is not None and (cached.version, cached.state) == (1, result.state) == (1, Account("ada", 5, 1))


# -- a stream whose every event its max_age hides still takes commands ---------------------------------


class SlowFirstRead:
    """A real store whose first ``read_stream`` waits 50 ms first: commands sent meanwhile queue."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.slow = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def read_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if self.slow:
            self.slow = False
            await asyncio.sleep(0.05)
        async for recorded in self.store.read_stream(*args, **kwargs):
            yield recorded


async def test_commands_after_every_event_aged_out(store: EventStore) -> None:
    """``max_age`` hides every event of a quiet stream (its version stays): commands decide on what reads
    show (nothing), as before, and append after the hidden version, alone and in a batch. (A cached state
    still holds what limits hide since: docs/lifecycle.md. Uncached, each command reads.)"""
    handler = handler_for(store, cache=None)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Deposit(3))
    await store.set_stream_limits("account-1", max_age=timedelta(milliseconds=200))
    await asyncio.sleep(0.3)
    assert [e async for e in store.read_stream("account-1")] == []
    assert await store.stream_version("account-1") == 1
    with pytest.raises(Refused, match="not opened"):  # decided on the stream as reads show it
        await handler.execute("1", Deposit(1))
    reopened = await handler.execute("1", Open("bob"))
    assert (reopened.version, reopened.state) == (2, Account("bob"))
    await asyncio.sleep(0.3)  # and again, the commands queued behind a slow first one: one batch
    slow = handler_for(SlowFirstRead(store), cache=None)
    first, *batched = await asyncio.gather(
        *(slow.execute("1", command) for command in (Deposit(1), Open("cy"), Deposit(4), Deposit(5))),
        return_exceptions=True,
    )
    assert isinstance(first, Refused)
    assert [(r.version, r.state) for r in batched] == [  # type: ignore[union-attr]
        (3, Account("cy")),
        (4, Account("cy", 4, 1)),
        (5, Account("cy", 9, 2)),
    ]
    assert [(e.version, e.type) async for e in store.read_stream("account-1")] == [
        (3, "Opened"),
        (4, "Deposited"),
        (5, "Deposited"),
    ]


# -- a repeated command id gets the first execution's result, also when its append is the replay ----------


@dataclass(frozen=True)
class Stamp:
    pass


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Stamped:
    on: str


@dataclass(frozen=True)
class Noted:
    text: str


@dataclass(frozen=True)
class Diary:
    stamps: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _diary_decide(command: object, state: Diary, today: str | None = None) -> list[object]:
    return [Stamped(str(today))] if isinstance(command, Stamp) else [Noted(command.text)]  # type: ignore[attr-defined]


def _diary_evolve(state: Diary, event: object) -> Diary:
    if isinstance(event, Stamped):
        return Diary((*state.stamps, event.on), state.notes)
    assert isinstance(event, Noted)
    return Diary(state.stamps, (*state.notes, event.text))


diary: Decider[object, Diary, object] = Decider(_diary_decide, _diary_evolve, Diary())
diary_codec: Codec[object] = Codec([Stamped, Noted])


class BeforeAppend:
    """A real store that runs ``hooks[n]`` (if any) before its ``n``-th append, counted from 1."""

    def __init__(self, store: EventStore, hooks: dict[int, Callable[[], Awaitable[None]]]) -> None:
        self.store = store
        self.hooks = hooks
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = None
    ) -> AppendResult:
        self.appends += 1
        if (hook := self.hooks.get(self.appends)) is not None:
            await hook()
        return await self.store.append(stream, events, expected_version)


async def _first_on_monday(store: EventStore, version: int = 1) -> None:
    first = await CommandHandler(store, diary, "doc", diary_codec).execute(
        "1", Stamp(), services="monday", command_id="X"
    )
    assert (first.version, [e.data for e in first.events]) == (version, [Stamped("monday")])


async def test_a_command_id_whose_append_was_the_replay_gets_the_first_result(store: EventStore) -> None:
    """Another execution of command id ``X`` (another process, a Monday clock) stores its events between
    this one's read and its append, at the same place: the append is answered as a replay
    (``replayed``), and this caller gets the first execution's result, not its own Tuesday decision."""
    late = BeforeAppend(store, {})
    handler = CommandHandler(late, diary, "doc", diary_codec, cache=True)
    await handler.execute("1", Note("hello"))  # cached at version 0
    late.hooks[2] = lambda: _first_on_monday(store)
    result = await handler.execute("1", Stamp(), services="tuesday", command_id="X")
    assert (result.version, [e.data for e in result.events]) == (1, [Stamped("monday")])
    assert result.state == Diary(("monday",), ("hello",))
    after = await handler.execute("1", Note("next"))  # decided on the stream as stored
    assert after.state == Diary(("monday",), ("hello", "next"))
    assert [e.type async for e in store.read_stream("doc-1")] == ["Noted", "Stamped", "Noted"]


async def test_a_command_id_replayed_inside_a_batch_gets_the_first_result(store: EventStore) -> None:
    """The same, with ``X`` queued behind another command of this process: its batch's append is the
    replay, and the first result reaches it."""

    async def slow() -> None:
        await asyncio.sleep(0.05)  # while the first command appends, X queues behind it

    late = BeforeAppend(store, {})
    handler = CommandHandler(late, diary, "doc", diary_codec, cache=True)
    await handler.execute("1", Note("hello"))
    late.hooks.update({2: slow, 3: lambda: _first_on_monday(store, 2)})
    alone = asyncio.create_task(handler.execute("1", Note("alone")))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(handler.execute("1", Stamp(), services="tuesday", command_id="X"))
    first, stamped = await asyncio.gather(alone, queued)
    assert first.version == 1
    assert (stamped.version, [e.data for e in stamped.events]) == (2, [Stamped("monday")])
    assert stamped.state == Diary(("monday",), ("hello", "alone"))
    after = await handler.execute("1", Note("next"))
    assert after.state == Diary(("monday",), ("hello", "alone", "next"))
