"""OS-process workers for the fault and soak tests: ``python -m tests.fault_workers KIND ARGS...``.

Each prints one line per acknowledged write, flushed at once, so the test knows exactly what a worker
had been told was stored when it was SIGKILLed.

- ``batches URL GENERATION WORKER``: appends batches of 1-30 events forever, with mixed guards: on the
  worker's own streams ``ANY``, ``STREAM_EXISTS``, ``NO_STREAM`` or the int version; on streams shared
  with the other workers an int guard, retried on ``WrongExpectedVersion``. Prints
  ``try GENERATION WORKER BATCH`` before each append and ``ack GENERATION WORKER BATCH STREAM
  LAST_VERSION`` after it.
- ``commands URL WORKER SECONDS STREAMS``: ``Deposit`` commands through a ``CommandHandler`` on shared hot
  account streams for SECONDS, each with a command id (every fifth sent twice: the second must return
  the first's result). Prints ``ok COMMAND_ID STREAM VERSION ATTEMPTS``, then ``done COUNT``.
- ``partitioned URL PARTITIONS``: a ``PartitionedRunner`` whose projection records, in the same
  transaction as its checkpoint, each event it handles (table ``soak_handled``). Prints ``ready``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from epoch import ANY, NO_STREAM, STREAM_EXISTS, NewEvent, WrongExpectedVersion, open_store
from epoch.records import ExpectedVersionLike

SHARED_STREAMS = 2
OWN_STREAMS = 3


def batch_events(generation: int, worker: int, batch: int, size: int) -> list[NewEvent]:
    return [
        NewEvent("Part", json.dumps({"g": generation, "w": worker, "b": batch, "n": size, "i": i}).encode())
        for i in range(size)
    ]


async def batches(url: str, generation: int, worker: int) -> None:
    rng = random.Random(generation * 1000 + worker)
    async with open_store(url) as store:
        for batch in range(10**9):
            size = rng.randint(1, 30)
            events = batch_events(generation, worker, batch, size)
            print(f"try {generation} {worker} {batch}", flush=True)  # a kill after this lands inside an append
            if rng.random() < 0.4:
                stream = f"shared-{rng.randrange(SHARED_STREAMS)}"
                while True:  # an int guard, re-read on a conflict
                    version = await store.stream_version(stream)
                    try:
                        result = await store.append(stream, events, NO_STREAM if version is None else version)
                        break
                    except WrongExpectedVersion:
                        continue
            else:
                # Only this worker (one generation at a time) writes its own streams, so every guard holds.
                stream = f"own{worker}-{rng.randrange(OWN_STREAMS)}"
                version = await store.stream_version(stream)
                guards: list[ExpectedVersionLike] = (
                    [ANY, NO_STREAM] if version is None else [ANY, STREAM_EXISTS, version]
                )
                result = await store.append(stream, events, rng.choice(guards))
            print(f"ack {generation} {worker} {batch} {stream} {result.version}", flush=True)
            # A pause keeps the log small enough to check in full after every kill; a kill then lands
            # as often between two appends as inside one.
            await asyncio.sleep(rng.uniform(0.002, 0.03))


async def commands(url: str, worker: int, seconds: float, streams: int) -> None:
    from tests.test_commands import Deposit, handler_for

    rng = random.Random(worker)
    done = 0
    deadline = time.monotonic() + seconds
    async with open_store(url) as store:
        handler = handler_for(store, retries=500, backoff=0.001, max_backoff=0.05)
        while time.monotonic() < deadline:
            stream = rng.randrange(streams)
            command_id = f"w{worker}-{done}"
            first = await handler.execute(stream, Deposit(1), command_id=command_id)
            if done % 5 == 0:
                again = await handler.execute(stream, Deposit(1), command_id=command_id)
                assert (again.stream, again.version, again.position) == (first.stream, first.version, first.position)
            print(f"ok {command_id} {first.stream} {first.version} {first.attempts}", flush=True)
            done += 1
    print(f"done {done}", flush=True)


class Handled:
    """Records each event it handles, with this process's id, in the batch's transaction."""

    name = "soak-handled"
    categories = "account"

    async def setup(self, tx: Any) -> None:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS soak_handled (seq BIGSERIAL PRIMARY KEY, stream TEXT, version INT,"
            " position NUMERIC, pid INT)"
        )

    async def handle_in_transaction(self, envelope: Any, tx: Any) -> None:
        await tx.execute(
            "INSERT INTO soak_handled (stream, version, position, pid) VALUES (?, ?, ?, ?)",
            [envelope.stream, envelope.version, envelope.position, os.getpid()],
        )


async def partitioned(url: str, partitions: int) -> None:
    from epoch.projections.scaleout import PartitionedRunner
    from tests.test_commands import codec

    async with open_store(url) as store:
        runner = PartitionedRunner(
            store, codec, Handled(), partitions, batch_size=50, poll_interval=0.05, rebalance_interval=0.3
        )
        print("ready", flush=True)
        await runner.run()


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "batches":
        asyncio.run(batches(args[0], int(args[1]), int(args[2])))
    elif kind == "commands":
        asyncio.run(commands(args[0], int(args[1]), float(args[2]), int(args[3])))
    elif kind == "partitioned":
        asyncio.run(partitioned(args[0], int(args[1])))
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
