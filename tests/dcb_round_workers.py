"""OS-process claimants for ``tests/test_postgres_dcb.py``:
``python -m tests.dcb_round_workers URL WORKER CLAIMANTS ROUNDS START``.

From the wall-clock instant ``START`` on (so that every process races), each of ``ROUNDS`` rounds runs
``CLAIMANTS`` tasks, each appending ``UsernameClaimed`` tagged ``username:round-{r}`` to its own stream
with the condition that no event carries that tag yet. Prints one line per round: the streams that won.
"""

from __future__ import annotations

import asyncio
import sys
import time

from epoch import AppendCondition, AppendConditionFailed, NewEvent, Query, QueryItem, open_store


async def claim(store: object, stream: str, tag: str) -> bool:
    condition = AppendCondition(Query([QueryItem(tags=(tag,))]))
    try:
        await store.append_with_condition(stream, [NewEvent("UsernameClaimed", b"{}", tags=(tag,))], condition)  # type: ignore[attr-defined]
    except AppendConditionFailed:
        return False
    return True


async def work(url: str, worker: int, claimants: int, rounds: int, start: float) -> list[list[str]]:
    won: list[list[str]] = []
    async with open_store(f"{url}?pool_max={claimants}") as store:
        await asyncio.sleep(max(0.0, start - time.time()))
        for r in range(rounds):
            streams = [f"claimant-{worker}x{i}x{r}" for i in range(claimants)]
            outcomes = await asyncio.gather(*(claim(store, s, f"username:round-{r}") for s in streams))
            won.append([s for s, ok in zip(streams, outcomes, strict=True) if ok])
            # The next round starts on the next tenth of a second everywhere, so rounds stay in step.
            await asyncio.sleep(max(0.0, start + (r + 1) * 0.1 - time.time()))
    return won


if __name__ == "__main__":
    url, worker, claimants, rounds, start = sys.argv[1:6]
    for winners in asyncio.run(work(url, int(worker), int(claimants), int(rounds), float(start))):
        print(" ".join(winners) or "-")
