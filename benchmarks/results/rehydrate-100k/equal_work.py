"""rehydrate_100k with equal work after the newest snapshot: each side with 0, then 99 events after it.

Interleaved rounds, ms per cold load (median, min, max of the rounds), through the bench's own sides:
``PYTHONPATH=. .venv/bin/python benchmarks/results/rehydrate-100k/equal_work.py sqlite 3`` (``postgres``:
a server in ``EPOCH_TEST_PG_DSN``). Printed into ``equal_work.txt`` beside it.
"""

import asyncio
import os
import statistics
import sys

from benchmarks.backends import Backend
from benchmarks.epoch_side import EpochSide
from benchmarks.es_side import EventsourcingSide


async def main(store: str, rounds: int) -> None:
    backend = Backend(store, admin_dsn=os.environ.get("EPOCH_TEST_PG_DSN"))
    cases = [
        ("epoch, 0 after (100,001 events)", EpochSide(backend), 100_001),
        ("epoch, 99 after (100,000 events)", EpochSide(backend), 100_000),
        ("eventsourcing, 0 after (100,000 events)", EventsourcingSide(backend), 100_000),
        ("eventsourcing, 99 after (99,999 events)", EventsourcingSide(backend), 99_999),
    ]
    samples = {name: [] for name, _, _ in cases}
    try:
        for _ in range(rounds):
            for name, side, length in cases:
                location = backend.fresh("eq")
                try:
                    seconds = await side.rehydrate_snapshots(location, length, 100, 3, True)
                finally:
                    backend.drop(location)
                samples[name].append(seconds * 1000 / 3)
    finally:
        backend.close()
    for name, values in samples.items():
        print(
            f"{store:8} {name:42} median {statistics.median(values):.3f} ms  min {min(values):.3f}  max {max(values):.3f}"
        )


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
