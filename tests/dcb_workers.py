"""OS-process claimants for the multi-process DCB test: ``python -m tests.dcb_workers URL WORKER CLAIMANTS [ITEMS]``.

Each worker opens the store, prints ``ready``, waits for a line on stdin (so that every process starts
at once), then runs ``CLAIMANTS`` concurrent tasks, each claiming the tag ``username:ada`` for its own
stream ``user-{WORKER * CLAIMANTS + i}`` with the condition "no event with that tag at all" (with
``ITEMS``, a query of that many items: ``seat:0`` ... and ``username:ada`` last). It prints the outcomes
(``"won"``/``"lost"``) as a JSON list, in claimant order.
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


def condition(items: int) -> AppendCondition:
    """``ADA``, or a query of ``items`` items whose last is ``username:ada``'s."""
    if items <= 1:
        return ADA
    seats = [QueryItem(tags=(f"seat:{i}",)) for i in range(items - 1)]
    return AppendCondition(Query([*seats, QueryItem(tags=("username:ada",))]))


async def work(url: str, worker: int, claimants: int, items: int = 1) -> list[str]:
    claimed = condition(items)
    async with open_store(url) as store:
        await store.head_position()  # the file is open before the start signal
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

        async def claim(i: int) -> str:
            event = NewEvent("UsernameClaimed", b'{"username": "ada"}', tags=("username:ada",))
            try:
                await store.append_with_condition(f"user-{worker * claimants + i}", [event], claimed)
            except AppendConditionFailed:
                return "lost"
            return "won"

        return list(await asyncio.gather(*(claim(i) for i in range(claimants))))


if __name__ == "__main__":
    url, worker, claimants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    items = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    print(json.dumps(asyncio.run(work(url, worker, claimants, items))))
