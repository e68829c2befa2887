"""OS-process workers for the decision tests: ``python -m tests.decision_workers URL WORKER TASKS NAME``.

Each worker registers ``TASKS`` users (ids ``w{WORKER}-{task}``) concurrently under one name through its
own DecisionHandler, and prints how many registrations won and how many were refused as duplicates.
"""

from __future__ import annotations

import asyncio
import json
import sys

from epoch import open_store
from epoch.examples.users.domain import DuplicateName
from epoch.examples.users.unique_names import RegisterUser, names_handler


async def work(url: str, worker: int, tasks: int, name: str) -> dict[str, int]:
    async with open_store(url) as store:
        handler = names_handler(store, retries=200)

        async def register(task: int) -> str:
            try:
                await handler.execute(RegisterUser(f"w{worker}-{task}", name))
            except DuplicateName:
                return "duplicate"
            return "won"

        outcomes = await asyncio.gather(*(register(task) for task in range(tasks)))
    return {"won": outcomes.count("won"), "duplicate": outcomes.count("duplicate")}


if __name__ == "__main__":
    url, worker, tasks, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(asyncio.run(work(url, worker, tasks, name))))
