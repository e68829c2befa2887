"""OS-process workers for the snapshot test: ``python -m tests.snapshot_workers URL WORKER COMMANDS``.

Each worker runs ``Add(1)`` commands on one shared stream through its own uncached CommandHandler with
snapshots every 7 versions, so every command loads from the newest snapshot another process may just
have written, and prints how many commands succeeded.
"""

from __future__ import annotations

import asyncio
import sys

from epoch import Codec, CommandHandler, Snapshots, open_store
from epoch.testing.contract_snapshots import Add, Added, counter

POLICY = Snapshots(every=7, keep=1000)


async def work(url: str, commands: int) -> int:
    async with open_store(url) as store:
        handler = CommandHandler(
            store,
            counter,
            "acc",
            Codec([Added]),
            retries=500,
            backoff=0.001,
            max_backoff=0.02,
            snapshots=POLICY,
            cache=None,
        )
        for _ in range(commands):
            await handler.execute("shared", Add(1))
    return commands


if __name__ == "__main__":
    print(asyncio.run(work(sys.argv[1], int(sys.argv[3]))))
