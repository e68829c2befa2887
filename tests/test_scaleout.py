"""Scale-out on PostgreSQL: 3 runner processes share a projection; one is SIGKILLed mid-run.

Every event must be handled exactly once, each stream in order, and no partition by two processes at
once (each batch records its process and time span; spans of one partition never overlap).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import suppress
from pathlib import Path

import pytest

from epoch.examples.users import AddUser, UserService, codec
from epoch.projections.scaleout import PartitionedRunner, partition_of
from epoch.stores import open_store
from tests.test_projections_seams import Batches  # the batch-recording projection both files use

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6

_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from epoch.stores import open_store
    from epoch.projections.scaleout import PartitionedRunner, partition_of
    from epoch.examples.users import codec

    class Handled:
        name = "handled"
        categories = "users"

        async def setup(self, tx):
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS handled (seq BIGSERIAL PRIMARY KEY, stream TEXT, version INT,"
                " partition INT, pid INT)"
            )
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS batches (partition INT, pid INT, started TIMESTAMPTZ, ended TIMESTAMPTZ)"
            )

        async def handle_in_transaction(self, envelope, tx):
            partition = partition_of(envelope.stream, int(sys.argv[2]))
            [[started]] = await tx.execute("SELECT clock_timestamp()")
            await tx.execute(
                "INSERT INTO handled (stream, version, partition, pid) VALUES (?, ?, ?, ?)",
                [envelope.stream, envelope.version, partition, os.getpid()],
            )
            await asyncio.sleep(0.01)
            await tx.execute(
                "INSERT INTO batches VALUES (?, ?, ?, clock_timestamp())", [partition, os.getpid(), started]
            )

    async def main():
        async with open_store(sys.argv[1]) as store:
            runner = PartitionedRunner(store, codec, Handled(), int(sys.argv[2]), batch_size=20,
                                       poll_interval=0.05, rebalance_interval=0.3)
            print("ready", flush=True)
            await runner.run()

    asyncio.run(main())
    """
)


async def write(url: str, directories: range, users: int) -> None:
    async with open_store(url) as store:
        for d in directories:
            service = UserService(store, f"d{d}")
            for i in range(users):
                await service.add_user(AddUser(f"user{i}"))


@pytest.mark.postgres
@pytest.mark.slow
async def test_three_processes_one_killed(pg_dsn: str) -> None:
    await write(pg_dsn, range(12), 8)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, pg_dsn, str(PARTITIONS)], cwd=ROOT, env=env, stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert await asyncio.to_thread(process.stdout.readline) == b"ready\n"
        writer = asyncio.create_task(write(pg_dsn, range(12, 24), 8))  # live events during the run
        await asyncio.sleep(1.5)
        victim = processes[0]
        import psycopg

        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            for _ in range(300):  # under load the victim may start late: kill it once it did some work
                query = "SELECT count(*) FROM handled WHERE pid = %s"
                with suppress(psycopg.errors.UndefinedTable):  # the runners create it as they start
                    if (await (await conn.execute(query, (victim.pid,))).fetchone() or [0])[0]:
                        break
                await asyncio.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        await writer
        total = 24 * 8
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            for _ in range(600):
                count = (await (await conn.execute("SELECT count(*) FROM handled")).fetchone() or [0])[0]
                if count >= total:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing more may arrive (no duplicates)
            handled = await (
                await conn.execute("SELECT stream, version, partition, pid FROM handled ORDER BY seq")
            ).fetchall()
            batches = await (await conn.execute("SELECT partition, pid, started, ended FROM batches")).fetchall()
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

    # Every event exactly once.
    keys = [(stream, version) for stream, version, _, _ in handled]
    assert len(keys) == total and len(set(keys)) == total
    # Per-stream order.
    last: dict[str, int] = {}
    for stream, version, partition, _ in handled:
        assert version == last.get(stream, -1) + 1, f"{stream} version {version} after {last.get(stream)}"
        assert partition == partition_of(stream, PARTITIONS)
        last[stream] = version
    # The killed process did work, and its partitions were taken over.
    pids = {pid for *_, pid in handled}
    assert victim.pid in pids and len(pids) == 3
    # No partition processed by two processes at once.
    by_partition: dict[int, list[tuple[object, object, int]]] = {}
    for partition, pid, started, ended in batches:
        by_partition.setdefault(partition, []).append((started, ended, pid))
    for partition, spans in by_partition.items():
        spans.sort(key=lambda s: s[0])  # type: ignore[arg-type, return-value]
        for (_, end_a, pid_a), (start_b, _, pid_b) in itertools.pairwise(spans):
            if pid_a != pid_b:
                assert end_a <= start_b, f"partition {partition}: {pid_a} and {pid_b} overlapped"  # type: ignore[operator]


def test_partition_of_is_stable() -> None:
    # Pinned values: a partition must not move between processes, machines or Python versions (CRC-32).
    assert partition_of("users-main", 8) == 5
    assert [partition_of(f"users-{i}", 4) for i in range(8)] == [1, 3, 1, 3, 0, 2, 0, 2]
    assert {partition_of(f"users-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert partition_of("users-main", 1) == 0


async def test_needs_postgres() -> None:
    from epoch.errors import ConfigurationError

    async with open_store("memory://") as store:
        with pytest.raises(ConfigurationError):
            PartitionedRunner(store, object(), object())  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_a_batch_projection_gets_each_partitions_share_of_a_page_as_one_batch(pg_dsn: str) -> None:
    assert (partition_of("users-asia", 2), partition_of("users-west", 2)) == (0, 1)
    async with open_store(pg_dsn) as store:
        asia, west = UserService(store, "asia"), UserService(store, "west")
        for service, name in ((asia, "u0"), (west, "u0"), (asia, "u1"), (west, "u1"), (asia, "u2")):
            await service.add_user(AddUser(name))
        projection = Batches()
        runner = PartitionedRunner(store, codec, projection, 2, poll_interval=0.02, rebalance_interval=60)
        task = asyncio.create_task(runner.run())

        async def handled(count: int) -> None:
            for _ in range(500):
                if sum(len(call) for call in projection.calls) >= count:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"fewer than {count} events handled: {projection.calls}")

        try:
            await handled(5)
            await west.add_user(AddUser("u2"))
            await handled(6)
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
    assert projection.calls == [
        [("users-asia", 0), ("users-asia", 1), ("users-asia", 2)],
        [("users-west", 0), ("users-west", 1)],
        [("users-west", 2)],
    ]
