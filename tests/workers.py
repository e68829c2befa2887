"""OS-process workers for the multi-process tests: ``python -m tests.workers URL WORKER COMMANDS STREAMS``.

Each worker runs ``Deposit(1)`` commands through its own CommandHandler on shared account streams,
sending every command id twice (the second must be a no-op), and prints how many commands succeeded.
"""

from __future__ import annotations

import asyncio
import random
import sys

from epoch import open_store
from tests.test_commands import Deposit, handler_for


async def work(url: str, worker: int, commands: int, streams: int) -> int:
    rng = random.Random(worker)
    done = 0
    async with open_store(url) as store:
        handler = handler_for(store, retries=200, backoff=0.001, max_backoff=0.05)
        for i in range(commands):
            stream = rng.randrange(streams)
            command_id = f"w{worker}-{i}"
            first = await handler.execute(stream, Deposit(1), command_id=command_id)
            again = await handler.execute(stream, Deposit(1), command_id=command_id)
            assert (again.version, again.position) == (first.version, first.position)
            done += 1
    return done


if __name__ == "__main__":
    url, worker, commands, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(asyncio.run(work(url, worker, commands, streams)))
