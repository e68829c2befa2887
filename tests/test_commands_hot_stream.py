"""The default retry budget is fit for a hot stream: with no ``retries=`` argument, every command of
16 concurrent tasks on one stream succeeds (on every backend), and so does every command of 2 OS
processes x 8 tasks on one SQLite file. (benchmarks/hot_stream.py measures the margin.)

Run as ``python -m tests.test_commands_hot_stream URL TASKS COMMANDS`` it is one of those processes:
it deposits 1 per command into ``account-hot`` and prints how many commands succeeded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from epoch import Codec, CommandHandler, EventStore, open_store
from tests.bank import Account, AccountCommand, AccountEvent, Closed, Deposit, Deposited, Open, Opened, account

ROOT = Path(__file__).resolve().parent.parent
codec: Codec[AccountEvent] = Codec([Opened, Deposited, Closed])


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


async def _main(url: str, tasks: int, commands: int) -> None:
    async with open_store(url) as store:
        print(await deposit_concurrently(store, tasks, commands))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
