"""Equal work after the newest snapshot: epoch with its newest snapshot at the head (0 events after it),
eventsourcing with 99 events after its newest; interleaved rounds, ms per cold load (median of rounds)."""
import asyncio, statistics, sys
from benchmarks.backends import Backend
from benchmarks.epoch_side import EpochSide
from benchmarks.es_side import EventsourcingSide

async def main(store: str, rounds: int) -> None:
    backend = Backend(store, admin_dsn="postgresql://postgres@127.0.0.1:49311/postgres")
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
        print(f"{store:8} {name:42} median {statistics.median(values):.3f} ms  min {min(values):.3f}  max {max(values):.3f}")

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
