"""One app process of the ``scaling`` workload (benchmarks/scaling.py): an app host's commands or its
projection worker, driven over stdin/stdout so one process serves every point of a run.

``python -m benchmarks.scaling_worker HOST``, then one JSON line per job on stdin:

- ``{"op": "commands", "url", "category", "clients", "commands", "streams", "cached"}``: ``clients``
  concurrent tasks, each executing deposits on its own ``streams`` streams in turn through one
  ``CommandHandler`` (with or without its state cache); first one untimed command per stream (the cache
  warm, as a running service has it; the pool's connections open). Prints ``ready``, waits for ``go``,
  runs ``commands`` commands in all, prints ``{"latencies_us", "finished", "failures"}``.
- ``{"op": "project", "url", "name", "table", "partitions", "categories"}``: a ``PartitionedRunner`` of
  an exactly-once projection (one upsert per event into ``table``); prints ``ready`` once it is a member
  (so every worker of the point counts the others at its first rebalance), runs from ``go`` until
  ``stop``, prints ``{"handled"}``.
- ``exit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.domain import Deposit, codec, decider
from epoch import CommandHandler, EventStore, WrongExpectedVersion, open_store
from epoch.projections.scaleout import PartitionedRunner
from epoch.records import EventEnvelope
from epoch.stores import Transaction


async def _line() -> str:
    # Control messages only, never inside a measurement: a thread hop here costs nothing measured.
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit(0)  # the parent is gone
    return line.strip()


def _say(message: object) -> None:
    sys.stdout.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    sys.stdout.flush()


async def _wait_for(word: str) -> None:
    got = await _line()
    if got != word:
        raise SystemExit(f"scaling_worker: expected {word!r}, got {got!r}")


async def commands(store: EventStore, host: int, job: dict[str, Any]) -> dict[str, Any]:
    handler = CommandHandler(store, decider, job["category"], codec, cache=True if job["cached"] else None)
    clients, streams = job["clients"], job["streams"]
    share = [job["commands"] // clients + (1 if c < job["commands"] % clients else 0) for c in range(clients)]
    latencies: list[int] = []
    failures = 0

    def ids(client: int) -> list[str]:
        return [f"h{host}c{client}s{s}" for s in range(streams)]

    async def warm(client: int) -> None:
        for id in ids(client):
            await handler.execute(id, Deposit(1, "warm"))

    async def run(client: int) -> None:
        nonlocal failures
        mine, execute, clock = ids(client), handler.execute, time.perf_counter
        for i in range(share[client]):
            started = clock()
            try:
                await execute(mine[i % streams], Deposit(i % 100 + 1, f"ref-{i:08d}"))
            except WrongExpectedVersion:
                failures += 1
            latencies.append(round((clock() - started) * 1e6))

    await asyncio.gather(*(warm(c) for c in range(clients)))
    _say("ready")
    await _wait_for("go")
    await asyncio.gather(*(run(c) for c in range(clients)))
    return {"latencies_us": latencies, "finished": time.time(), "failures": failures}


class Tally:
    """The projection: how many events of each stream, one upsert per event in the batch's transaction."""

    def __init__(self, name: str, table: str, categories: str) -> None:
        self.name = name
        self.table = table
        self.categories = categories
        self.handled = 0

    async def setup(self, tx: Transaction) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)")

    async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
        await tx.execute(
            f"INSERT INTO {self.table} (stream, n) VALUES (?, 1) ON CONFLICT (stream) DO UPDATE SET n = {self.table}.n + 1",
            [envelope.stream],
        )
        self.handled += 1  # counted before the commit: a rolled-back batch is counted again (rare here)


async def project(store: EventStore, job: dict[str, Any]) -> dict[str, Any]:
    projection = Tally(job["name"], job["table"], job["categories"])
    async with PartitionedRunner(
        store, codec, projection, job["partitions"], poll_interval=0.01, rebalance_interval=0.2
    ) as runner:
        # Joined before the start (its member lock taken): the first rebalance of every worker of the
        # point then sees them all and takes its fair share at once, instead of one taking everything.
        await runner._connect()
        _say("ready")
        await _wait_for("go")
        task = asyncio.create_task(runner.run())
        await _wait_for("stop")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {"handled": projection.handled}


async def main(host: int) -> None:
    store: EventStore | None = None
    url = ""
    try:
        while True:
            line = await _line()
            if line == "exit":
                return
            job = json.loads(line)
            if job["url"] != url:  # a new round's database
                if store is not None:
                    await store.close()
                store, url = await open_store(job["url"]), job["url"]
            assert store is not None
            _say(await (commands(store, host, job) if job["op"] == "commands" else project(store, job)))
    finally:
        if store is not None:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
