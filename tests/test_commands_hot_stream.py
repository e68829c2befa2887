"""Hot streams. Commands for one stream in one process never race each other: while one runs, the others
queue and are then decided in sequence on the evolving state and appended as one batch (one append per
batch, counted here by a wrapping store), each with its own result or error. Across processes the
default retry budget holds: every command of 16 concurrent tasks on one stream succeeds (on every
backend), and so does every command of 2 OS processes x 8 tasks on one SQLite file.
(benchmarks/hot_stream.py measures the margin.)

Run as ``python -m tests.test_commands_hot_stream URL TASKS COMMANDS`` it is one of those processes:
it deposits 1 per command into ``account-hot`` and prints how many commands succeeded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from epoch import (
    Codec,
    CommandHandler,
    Decider,
    EventStore,
    ExecuteResult,
    NewEvent,
    _run,
    open_store,
)
from epoch.records import AppendResult, ExpectedVersionLike, RecordedEvent
from tests.bank import (
    Account,
    AccountCommand,
    AccountEvent,
    Close,
    Closed,
    Deposit,
    Deposited,
    InsufficientFunds,
    Open,
    Opened,
    Withdraw,
    Withdrawn,
    account,
)

ROOT = Path(__file__).resolve().parent.parent
codec: Codec[AccountEvent] = Codec([Opened, Deposited, Withdrawn, Closed])


def default_handler(store: EventStore) -> CommandHandler[AccountCommand, Account, AccountEvent]:
    return CommandHandler(store, account, "account", codec)  # the defaults under test: no retries=


async def deposit_concurrently(store: EventStore, tasks: int, commands: int) -> int:
    """``tasks`` tasks each execute ``commands`` deposits on ``account-hot``; how many succeeded."""
    handler = default_handler(store)

    async def task() -> int:
        for _ in range(commands):
            await handler.execute("hot", Deposit(1))  # a lost command raises WrongExpectedVersion here
        return commands

    return sum(await asyncio.gather(*(task() for _ in range(tasks))))


async def test_sixteen_tasks_on_one_stream_all_succeed(store: EventStore) -> None:
    await default_handler(store).execute("hot", Open("ada"))
    assert await deposit_concurrently(store, tasks=16, commands=10) == 160
    state, version = await default_handler(store).load("hot")
    assert (state, version) == (Account("ada", 160), 160)
    assert [e.version async for e in store.read_stream("account-hot")] == list(range(161))


async def test_two_processes_of_eight_tasks_on_one_sqlite_file(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        await default_handler(store).execute("hot", Open("ada"))
    command = [sys.executable, "-m", "tests.test_commands_hot_stream", sqlite_url, "8", "10"]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=120) for w in workers))
    assert [(w.returncode, out, err) for w, (out, err) in zip(workers, outputs, strict=True)] == [(0, "80\n", "")] * 2
    async with open_store(sqlite_url) as store:
        state, version = await default_handler(store).load("hot")
        assert (state, version) == (Account("ada", 160), 160)
        assert [e.version async for e in store.read_stream("account-hot")] == list(range(161))


class CountingStore:
    """A real store that records the events of every append (failed ones too) and yields to the loop
    before each, as a store doing I/O does, so the other tasks queue their commands meanwhile.

    ``interfere``: before the first append of more than one event, another writer's deposit of 100 lands.
    """

    def __init__(self, store: EventStore, interfere: bool = False) -> None:
        self.store = store
        self.appends: list[list[str]] = []
        self.lookups = 0
        self.looked_up = asyncio.Event()
        self.looked_up.set()
        self.interfere = interfere

    def hold(self, lookups: int) -> None:
        """From now on, appends wait until ``lookups`` more ``get_event`` calls (command id checks) returned."""
        self.lookups = lookups
        self.looked_up.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        found = await self.store.get_event(id, stream)
        self.lookups -= 1
        if self.lookups == 0:
            self.looked_up.set()
        return found

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = None
    ) -> AppendResult:
        events = list(events)
        await self.looked_up.wait()
        await asyncio.sleep(0)
        if self.interfere and len(events) > 1:
            self.interfere = False
            self.appends.append(["Deposited"])
            await self.store.append(stream, [codec.encode(Deposited(100))])
        self.appends.append([e.type for e in events])
        return await self.store.append(stream, events, expected_version)


async def opened(store: EventStore) -> CommandHandler[AccountCommand, Account, AccountEvent]:
    handler = default_handler(store)
    await handler.execute("hot", Open("ada"))
    return handler


def summary(results: list[Any]) -> list[Any]:
    """Per command: its version, its events' versions and the balance after them, or its error's text."""
    return [
        (r.version, [e.version for e in r.events], r.state.balance, r.attempts)
        if isinstance(r, ExecuteResult)
        else f"{type(r).__name__}: {r}"
        for r in results
    ]


async def test_sixteen_commands_on_one_stream_are_decided_in_sequence_and_appended_together(
    store: EventStore,
) -> None:
    counting = CountingStore(store)
    handler = await opened(counting)
    results = await asyncio.gather(*(handler.execute("hot", Deposit(1)) for _ in range(16)))
    # The first ran alone; the 15 that queued meanwhile went in one append: no conflict, one decision each.
    assert [len(a) for a in counting.appends] == [1, 1, 15]
    assert summary(results) == [(v, [v], v, 1) for v in range(1, 17)]
    positions = [r.position for r in results]
    assert positions == sorted(positions) == [r.events[0].position for r in results]
    assert len({r.events[0].id for r in results}) == 16
    assert [e.version async for e in store.read_stream("account-hot")] == list(range(17))
    assert await handler.load("hot") == (Account("ada", 16), 16)


async def test_a_failing_decision_fails_only_its_own_command(store: EventStore) -> None:
    counting = CountingStore(store)
    handler = await opened(counting)
    commands: list[AccountCommand] = [Deposit(1), Deposit(2), Withdraw(50), Deposit(3), Withdraw(5), Deposit(4)]
    results = await asyncio.gather(*(handler.execute("hot", c) for c in commands), return_exceptions=True)
    # Withdraw(5) was decided on the state the deposits queued before it left (balance 6); Withdraw(50)
    # failed alone, and the commands after it decided as if it had not been sent.
    assert summary(results) == [
        (1, [1], 1, 1),
        (2, [2], 3, 1),
        "InsufficientFunds: balance 3 < 50",
        (3, [3], 6, 1),
        (4, [4], 1, 1),
        (5, [5], 5, 1),
    ]
    assert isinstance(results[2], InsufficientFunds)
    assert counting.appends == [["Opened"], ["Deposited"], ["Deposited", "Deposited", "Withdrawn", "Deposited"]]


async def test_a_batch_that_closes_the_stream_refuses_the_commands_after(store: EventStore) -> None:
    counting = CountingStore(store)
    handler = await opened(counting)
    commands: list[AccountCommand] = [Deposit(1), Deposit(2), Close(), Deposit(3)]
    results = await asyncio.gather(*(handler.execute("hot", c) for c in commands), return_exceptions=True)
    assert [r if isinstance(r, ExecuteResult) else f"{type(r).__name__}: {r}" for r in results][3] == (
        "StreamClosed: account-hot: the stream is closed at version 3"
    )
    assert [(r.version, r.state) for r in results[:3] if isinstance(r, ExecuteResult)] == [
        (1, Account("ada", 1)),
        (2, Account("ada", 3)),
        (3, Account("ada", 3, closed=True)),
    ]
    assert counting.appends == [["Opened"], ["Deposited"], ["Deposited", "Closed"]]


async def test_a_command_id_repeated_inside_a_batch_gets_the_first_result(store: EventStore) -> None:
    counting = CountingStore(store)
    handler = await opened(counting)
    counting.hold(7)  # the appends wait until every command id below was checked
    ids: list[str | UUID] = ["a", "b", "same", "c", "same", UUID("6b0c9d8e-2f43-4b6e-9a51-0d9f7c3e1a22"), "d"]
    first = handler.execute("hot", Deposit(1))  # no command id: it runs alone while the others queue
    results = await asyncio.gather(first, *(handler.execute("hot", Deposit(10), command_id=i) for i in ids))
    assert [len(a) for a in counting.appends] == [1, 1, 6]
    # The batch's order is the order the lookups returned in (concurrent on PostgreSQL): each command
    # has its own version, except the second "same", which got the first one's result.
    assert results[5] is results[3]
    distinct = [r for i, r in enumerate(results) if i != 5]
    assert sorted(summary(distinct)) == [(v, [v], 1 + 10 * (v - 1), 1) for v in range(1, 8)]
    assert results[0].version == 1
    assert await handler.load("hot") == (Account("ada", 61), 7)
    again = await default_handler(store).execute("hot", Deposit(10), command_id="same")
    assert summary([again]) == summary([results[3]])  # from the store, in another handler


async def test_a_conflict_mid_batch_decides_the_whole_batch_again(store: EventStore) -> None:
    counting = CountingStore(store, interfere=True)
    handler = await opened(counting)
    commands: list[AccountCommand] = [Deposit(1), Deposit(1), Withdraw(101), Deposit(1)]
    results = await asyncio.gather(*(handler.execute("hot", c) for c in commands), return_exceptions=True)
    # The batch's append lost to another writer's deposit of 100 at version 2: all of it was decided
    # again on the new state, where the Withdraw(101) that first failed now succeeds.
    assert counting.appends == [
        ["Opened"],
        ["Deposited"],
        ["Deposited"],  # the other writer
        ["Deposited", "Deposited"],  # refused: the stream moved
        ["Deposited", "Withdrawn", "Deposited"],
    ]
    assert summary(results) == [(1, [1], 1, 1), (3, [3], 102, 2), (4, [4], 1, 2), (5, [5], 2, 2)]


async def test_a_batch_out_of_retries_fails_each_of_its_commands_with_the_conflict(store: EventStore) -> None:
    counting = CountingStore(store, interfere=True)
    await default_handler(store).execute("hot", Open("ada"))
    handler = CommandHandler(counting, account, "account", codec, retries=0)
    results = await asyncio.gather(*(handler.execute("hot", Deposit(1)) for _ in range(3)), return_exceptions=True)
    assert summary(results) == [
        (1, [1], 1, 1),
        "WrongExpectedVersion: account-hot: expected version 1, actual 2",
        "WrongExpectedVersion: account-hot: expected version 1, actual 2",
    ]
    assert counting.appends == [["Deposited"], ["Deposited"], ["Deposited", "Deposited"]]
    assert await default_handler(store).load("hot") == (Account("ada", 101), 2)


async def _main(url: str, tasks: int, commands: int) -> None:
    async with open_store(url) as store:
        print(await deposit_concurrently(store, tasks, commands))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))


async def test_a_batch_past_its_byte_bound_appends_in_parts(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands queued on a stream go out in appends of at most ``MAX_BATCH_BYTES`` of events (and one
    command's events more), each command still with its own result: PostgreSQL refuses a parameter past
    1 GB, which one append of every queued command could pass."""
    counting = CountingStore(store)
    handler = await opened(counting)
    [first] = (await handler.execute("hot", Deposit(1))).events  # every deposit's event has this size
    async for recorded in store.read_stream("account-hot", from_version=first.version):
        monkeypatch.setattr(_run, "MAX_BATCH_BYTES", 3 * (len(recorded.data) + len(recorded.metadata)))
    results = await asyncio.gather(*(handler.execute("hot", Deposit(1)) for _ in range(12)))
    # Opened, the deposit above, the first of the 12 alone; the 11 queued meanwhile in parts of three.
    assert [len(a) for a in counting.appends] == [1, 1, 1, 3, 3, 3, 2]
    assert summary(results) == [(v, [v], v, 1) for v in range(2, 14)]
    assert [e.version async for e in store.read_stream("account-hot")] == list(range(14))
    assert await handler.load("hot") == (Account("ada", 13), 13)


async def test_an_is_terminal_that_raises_fails_only_its_own_command_in_a_batch(store: EventStore) -> None:
    """As when a command runs alone: a raising ``is_terminal`` is that command's error, not the batch's."""

    def is_terminal(state: Account) -> bool:
        if state.balance == 2:
            raise RuntimeError("is_terminal broke at balance 2")
        return state.closed

    counting = CountingStore(store)
    handler = CommandHandler(
        counting, Decider(account.decide, account.evolve, account.initial_state, is_terminal), "account", codec
    )
    await handler.execute("hot", Open("ada"))
    results = await asyncio.gather(*(handler.execute("hot", Deposit(1)) for _ in range(4)), return_exceptions=True)
    broke = "RuntimeError: is_terminal broke at balance 2"  # both queued after it decide on balance 2
    assert summary(results) == [(1, [1], 1, 1), (2, [2], 2, 1), broke, broke]
    assert counting.appends == [["Opened"], ["Deposited"], ["Deposited"]]


class RetriedAppends(CountingStore):
    """A real store whose appends of more than one event are sent twice, as a store's own retry after a
    lost reply does: the second is answered as a replay (``replayed``) of the first, which it returns."""

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = None
    ) -> AppendResult:
        events = list(events)
        first = await super().append(stream, events, expected_version)
        if len(events) < 2:
            return first
        again = await self.store.append(stream, events, expected_version)
        assert again.replayed and again.positions == first.positions
        return again


async def test_a_batch_whose_append_the_store_retried_stands_as_written(store: EventStore) -> None:
    """A replay of the batch's own append (a command without an id among them: its random ids were never
    stored before) is not another execution's: every command keeps its own result, nothing is decided or
    written again."""
    counting = RetriedAppends(store)
    handler = await opened(counting)
    counting.hold(1)  # the appends wait until the command id below was checked: it queues with the others
    commands = [Deposit(1), Deposit(2), Deposit(3), Deposit(4)]
    ids = [None, "with-id", None, None]
    results = await asyncio.gather(
        *(handler.execute("hot", c, command_id=i) for c, i in zip(commands, ids, strict=True))
    )
    # Each its own deposit, once (the order the three queued in varies with the store's awaits).
    assert [[e.data for e in r.events] for r in results] == [[Deposited(c.amount)] for c in commands]
    assert sorted(r.version or 0 for r in results) == [1, 2, 3, 4] and results[0].version == 1
    assert counting.appends == [["Opened"], ["Deposited"], ["Deposited", "Deposited", "Deposited"]]
    assert [e.version async for e in store.read_stream("account-hot")] == [0, 1, 2, 3, 4]
    assert await handler.load("hot") == (Account("ada", 10), 4)
