"""OS-process claimants for the multi-process DCB test: ``python -m tests.dcb_workers URL WORKER CLAIMANTS``.

Each worker opens the store, prints ``ready``, waits for a line on stdin (so that every process starts
at once), then runs ``CLAIMANTS`` concurrent tasks, each claiming the tag ``username:ada`` for its own
stream ``user-{WORKER * CLAIMANTS + i}`` with the condition "no event with that tag at all". It prints
the outcomes (``"won"``/``"lost"``) as a JSON list, in claimant order.
"""

from __future__ import annotations

import asyncio
import json
import sys

from epoch import open_store
from epoch.errors import AppendConditionFailed
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import NewEvent

ADA = AppendCondition(Query([QueryItem(tags=("username:ada",))]))


async def work(url: str, worker: int, claimants: int) -> list[str]:
    async with open_store(url) as store:
        await store.head_position()  # the file is open before the start signal
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

        async def claim(i: int) -> str:
            event = NewEvent("UsernameClaimed", b'{"username": "ada"}', tags=("username:ada",))
            try:
                await store.append_with_condition(f"user-{worker * claimants + i}", [event], ADA)
            except AppendConditionFailed:
                return "lost"
            return "won"

        return list(await asyncio.gather(*(claim(i) for i in range(claimants))))


if __name__ == "__main__":
    url, worker, claimants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(work(url, worker, claimants))))
