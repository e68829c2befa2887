"""Network partitions between app hosts and PostgreSQL (tests/netns.py): bounded detection, fenced leases,
ambiguous commits. Each test builds its own hosts, links and PostgreSQL server and removes them after.

Without network namespaces (not root, no iproute2) these tests skip with the reason, and fail with it in
one line under CI (CI=true) or EPOCH_REQUIRE_NETNS=1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import time
import zlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from epoch._idempotency import event_id_for
from epoch.examples.users import AddUser, UserService, codec
from epoch.projections.scaleout import PartitionedRunner, partition_of
from epoch.stores import open_store
from tests.netns import Network, required, sweep, unavailable, wait_for
from tests.partition_workers import APPEND_STREAMS, Handled, event_id

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 6
DETECTION_BOUND = 10.0
"""reconnect_timeout's default: a cut-off append raises StoreUnavailable within it (docs/scaling.md)."""
SERVER_BOUND = 5.0
"""keepalives_idle + keepalives_interval * keepalives_count (2 + 1 * 3 s): the server ends a cut-off session."""
SLACK = 3.0
"""A shared, loaded test machine: scheduling and the tests' own 0.05 s polls."""


@pytest.fixture
def network() -> Iterator[Network]:
    reason = unavailable()
    if reason is not None:
        if required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    sweep()
    net = Network(3)
    try:
        yield net
    finally:
        net.close()


def _readline(process: subprocess.Popen[bytes]) -> bytes:
    assert process.stdout is not None
    return process.stdout.readline()


def _sessions(conn: psycopg.Connection[Any], address: str) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE client_addr = %s", (address,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_cut_off_client_hears_within_the_bound_and_the_server_ends_its_session(network: Network) -> None:
    probe = network.spawn(0, "-m", "tests.partition_workers", "probe", network.dsn)
    assert _readline(probe) == b"ready\n"
    assert probe.stdin is not None
    with psycopg.connect(network.dsn, autocommit=True) as conn:
        assert _sessions(conn, network.address(0)) == 1  # the pool's one connection
        network.cut(0)
        cut = time.monotonic()
        probe.stdin.write(b"append\n")
        probe.stdin.flush()
        server = wait_for(lambda: _sessions(conn, network.address(0)) == 0, 30, "the server ends the session")
        outcome = json.loads(_readline(probe))
        client = time.monotonic() - cut
        network.heal(0)
        probe.stdin.write(b"append\n")
        probe.stdin.flush()
        assert json.loads(_readline(probe))["outcome"] == "ok"
    assert outcome["outcome"].split(": ")[:3] == ["ConnectionLost", "probe", "PostgreSQL error"]
    # Not sooner than the retries allow: they stop once the next pause (at most 1.5 s) would pass the bound.
    assert DETECTION_BOUND - 2.0 <= outcome["seconds"] <= DETECTION_BOUND + SLACK
    assert client <= DETECTION_BOUND + SLACK
    assert server <= SERVER_BOUND + SLACK


async def _write(url: str, directories: range, users: int) -> None:
    async with open_store(url) as store:
        for d in directories:
            service = UserService(store, f"d{d}")
            for i in range(users):
                await service.add_user(AddUser(f"user{i}"))


def _lease_holders(conn: psycopg.Connection[Any], key: int) -> dict[int, str]:
    """Partition -> the client address of the session holding its advisory lock."""
    rows = conn.execute(
        "SELECT l.objid::int, host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = %s",
        (key,),
    ).fetchall()
    return {int(partition): str(address) for partition, address in rows}


async def test_three_worker_hosts_one_cut_off_and_healed(network: Network) -> None:
    await _write(network.dsn, range(12), 8)
    workers = [
        network.spawn(h, "-m", "tests.partition_workers", "lease", network.dsn, str(PARTITIONS)) for h in range(3)
    ]
    for worker in workers:
        assert await asyncio.to_thread(_readline, worker) == b"ready\n"
    key = zlib.crc32(b"epoch:partitions:handled") & 0x7FFFFFFF  # the runner's advisory-lock space for partitions
    with psycopg.connect(network.dsn, autocommit=True) as conn:
        spread = await asyncio.to_thread(
            wait_for,
            lambda: len(set(_lease_holders(conn, key).values())) == 3 and len(_lease_holders(conn, key)) == PARTITIONS,
            30,
            "the partitions spread over the three hosts",
        )
        assert spread < 30
        writer = asyncio.create_task(_write(network.dsn, range(12, 24), 8))  # live events during the run
        await asyncio.sleep(1.0)
        network.cut(0)
        takeover = await asyncio.to_thread(
            wait_for,
            lambda: network.address(0) not in _lease_holders(conn, key).values()
            and len(_lease_holders(conn, key)) == PARTITIONS,
            30,
            "the cut-off host's partitions taken over",
        )
        await writer
        await asyncio.sleep(2.0)  # the cut-off worker keeps running (and failing) while the others work
        network.heal(0)
        await asyncio.to_thread(
            wait_for,
            lambda: network.address(0) in _lease_holders(conn, key).values(),
            30,
            "the healed host rejoins and takes partitions again",
        )
        total = 24 * 8
        await asyncio.to_thread(
            wait_for,
            lambda: (conn.execute("SELECT count(*) FROM handled").fetchone() or [0])[0] >= total,
            60,
            "every event handled",
        )
        await asyncio.sleep(1.0)  # nothing more may arrive (no duplicates)
        handled = conn.execute("SELECT stream, version, partition, pid FROM handled ORDER BY seq").fetchall()
        batches = conn.execute("SELECT partition, pid, started, ended FROM batches").fetchall()
    assert all(worker.poll() is None for worker in workers)  # the cut-off worker rejoined rather than died
    assert takeover <= SERVER_BOUND + 1.0 + SLACK  # the server's bound, then one rebalance_interval (0.3 s)

    # The read model equals a rebuild: every event once, each stream in order, in the right partition.
    async with open_store(network.dsn) as store:
        rebuilt: dict[str, list[int]] = {}
        async for recorded in store.read_all(categories=["users"]):
            rebuilt.setdefault(recorded.stream, []).append(recorded.version)
    model: dict[str, list[int]] = {}
    for stream, version, partition, _ in handled:
        assert partition == partition_of(stream, PARTITIONS)
        model.setdefault(stream, []).append(version)
    assert model == rebuilt
    assert len(handled) == total
    # No partition processed by two workers at once, across the cut and the heal.
    spans: dict[int, list[tuple[Any, Any, int]]] = {}
    for partition, pid, started, ended in batches:
        spans.setdefault(partition, []).append((started, ended, pid))
    for partition, ordered in spans.items():
        ordered.sort(key=lambda span: span[0])
        for (_, end_a, pid_a), (start_b, _, pid_b) in itertools.pairwise(ordered):
            if pid_a != pid_b:
                assert end_a <= start_b, f"partition {partition}: {pid_a} and {pid_b} overlapped"


async def test_a_stale_generation_commits_nothing_and_drops_the_partition(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as store:
        service = UserService(store, "fence")
        await service.add_user(AddUser("first"))
        [first] = [r async for r in store.read_stream("users-fence")]
        runner = PartitionedRunner(store, codec, Handled(1), 1, poll_interval=0.02, rebalance_interval=600)
        task = asyncio.create_task(runner.run())
        try:
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:

                async def rows(sql: str) -> list[tuple[Any, ...]]:
                    return list(await (await conn.execute(sql)).fetchall())

                for _ in range(500):
                    if runner.held and await rows("SELECT 1 FROM handled"):
                        break
                    await asyncio.sleep(0.01)
                assert runner.generations == {0: 1}
                # Another runner took the partition over (as after this one's lease was lost unseen).
                await conn.execute("UPDATE epoch_leases SET generation = 2 WHERE name = 'handled' AND partition = 0")
                await service.add_user(AddUser("second"))
                for _ in range(500):
                    if not runner.held:
                        break
                    await asyncio.sleep(0.01)
                assert (runner.held, runner.generations) == ({}, {})
                assert await rows("SELECT stream, version FROM handled ORDER BY seq") == [("users-fence", 0)]
                checkpoint = await rows("SELECT position FROM epoch_checkpoints WHERE name = 'handled/0'")
                assert checkpoint == [(first.position,)]
                assert await rows("SELECT partition, generation FROM epoch_leases WHERE name = 'handled'") == [(0, 2)]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


WRITES = 240
QUICK = "reconnect_timeout=1&pool_timeout=2&connect_timeout=2&keepalives_idle=1&keepalives_interval=1"
QUICK += "&keepalives_count=1&tcp_user_timeout=1000"
"""The writer's URL options: the same mechanism as the defaults, tighter, so many cuts fit in the test."""


async def test_ambiguous_commits_retried_with_the_same_ids_are_written_once(network: Network) -> None:
    writer = network.spawn(1, "-m", "tests.partition_workers", "writer", f"{network.dsn}?{QUICK}")
    assert await asyncio.to_thread(_readline, writer) == b"ready\n"
    rng = random.Random()
    cuts = {"both": 0, "replies": 0}
    lines: list[dict[str, Any]] = []

    def outcomes() -> set[bool]:
        return {line["stored_before_retry"] for line in lines if line["failures"]}

    deadline = time.monotonic() + 150
    # At least WRITES writes, and on until both outcomes of a cut write were seen (stored before the
    # retry: the answer was lost after the commit; not stored: the request never arrived).
    while (len(lines) < WRITES or outcomes() != {True, False}) and time.monotonic() < deadline:
        # Cut after a random number of writes and a random delay (so at random points of a write), 2 s long.
        for _ in range(rng.randint(3, 30)):
            lines.append(json.loads(await asyncio.to_thread(_readline, writer)))
        await asyncio.sleep(rng.uniform(0.0, 0.005))
        kind = rng.choice(sorted(cuts))
        network.cut(1, replies=kind == "replies")
        cuts[kind] += 1
        await asyncio.sleep(2.0)
        network.heal(1)
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(b"stop\n")
    writer.stdin.flush()
    rest = await asyncio.to_thread(writer.stdout.read)
    lines.extend(json.loads(line) for line in rest.splitlines())
    assert await asyncio.to_thread(writer.wait, 30) == 0
    assert [line["i"] for line in lines] == list(range(len(lines)))
    assert len(lines) >= WRITES
    assert outcomes() == {True, False}, cuts

    async with open_store(network.dsn) as store:
        for s in range(APPEND_STREAMS):
            appended = [line for line in lines if line["i"] % 2 == 0 and line["i"] // 2 % APPEND_STREAMS == s]
            stored = [r async for r in store.read_stream(f"amb-{s}")]
            assert [r.id for r in stored] == [event_id(line["i"]) for line in appended]  # each once, in order
            assert [r.version for r in stored] == list(range(len(appended)))
            assert [(line["version"], line["positions"]) for line in appended] == [
                (r.version, [r.position]) for r in stored
            ]  # a retry returned the original result
            executed = [line for line in lines if line["i"] % 2 == 1 and line["i"] // 2 % APPEND_STREAMS == s]
            stream = f"users-x{s}"
            events = [r async for r in store.read_stream(stream)]
            commands = [json.loads(r.metadata)["$command_id"] for r in events]
            assert commands == [f"cmd-{line['i']}" for line in executed]  # each command's event once, in order
            firsts = {r.id: r for r in events}
            assert [(line["version"], line["position"]) for line in executed] == [
                (
                    firsts[event_id_for(f"cmd-{line['i']}", stream, 0)].version,
                    firsts[event_id_for(f"cmd-{line['i']}", stream, 0)].position,
                )
                for line in executed
            ]
