"""PostgreSQL store: global order under out-of-order commits, faults, migrations, many processes.

Against a real server (conftest's ``pg_dsn``: a fresh database per test), never mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import random
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from epoch import NO_STREAM, ConfigurationError, RecordedEvent, StoreUnavailable, open_store
from epoch.cli import app
from epoch.stores._sql import sql_store
from epoch.stores.postgres import PostgresEventStore, decode_position, encode_position
from epoch.stores.postgres.migrations import LATEST_VERSION, MIGRATIONS
from epoch.testing import collect
from epoch.testing import new_events as new

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresEventStore]:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_max=24") as opened:
        yield opened


# -- positions and visibility ---------------------------------------------------------------------


async def test_positions_encode_transaction_and_ordinal(store: PostgresEventStore) -> None:
    first = await store.append("s-1", new(3))
    second = await store.append("s-2", new(1))
    xid, seq = decode_position(first.positions[0])
    assert [decode_position(p) for p in first.positions] == [(xid, 0), (xid, 1), (xid, 2)]
    assert decode_position(second.position)[0] > xid
    assert encode_position(xid, 2) == first.position
    assert [r.position for r in await collect(store.read_all())] == [*first.positions, *second.positions]


async def test_late_commit_is_not_skipped(pg_dsn: str) -> None:
    """An event committed after a newer one sorts first and only becomes visible with it."""
    async with (
        await PostgresEventStore.from_url(pg_dsn + "?visibility_timeout=0") as slow,
        await PostgresEventStore.from_url(pg_dsn + "?visibility_timeout=0") as fast,
    ):
        release = asyncio.Event()

        async def hold() -> None:
            await release.wait()

        slow._before_commit = hold
        early = asyncio.create_task(slow.append("early-1", new(1)))
        await asyncio.sleep(0.2)  # early now holds its transaction (and its xid) open
        late = await fast.append("late-1", new(1))
        assert await collect(fast.read_all()) == []  # late committed, but early may still land before it
        lag = await fast.visibility_lag()
        assert (lag.pending_events, lag.visible_head, lag.committed_head) == (1, 0, late.position)
        assert lag.oldest_transaction_age is not None and lag.oldest_transaction_age > 0.1
        release.set()
        first = await early
        assert first.position < late.position
        assert [r.position for r in await collect(fast.read_all())] == [first.position, late.position]
        assert (await fast.visibility_lag()).pending_events == 0


async def test_read_all_waits_briefly_for_open_transactions(store: PostgresEventStore) -> None:
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    async with await PostgresEventStore.from_url(store.conninfo) as other:
        other._before_commit = hold
        early = asyncio.create_task(other.append("early-1", new(1)))
        await asyncio.sleep(0.2)
        late = await store.append("late-1", new(1))
        asyncio.get_running_loop().call_later(0.2, release.set)
        # read_all reaches the end of the visible log, sees a pending event and waits (< visibility_timeout)
        assert [r.position for r in await collect(store.read_all())] == [(await early).position, late.position]
        assert await store.head_position() == late.position


@pytest.mark.parametrize("erase", ["truncate", "hard delete"])
async def test_head_position_never_goes_back_when_an_erasure_takes_the_visible_head(
    store: PostgresEventStore, erase: str
) -> None:
    """An older transaction holds an id, so event B (after it) is committed but not visible yet; erasing
    A (the visible head) together with B must not take the head back: it stays at A until B is visible
    (it fell to 0 before migration 9, found by an adversarial round)."""
    a = await store.append("s-1", new(1))
    with psycopg.connect(store.conninfo) as older:
        older.execute("SELECT pg_current_xact_id()")  # a transaction with an id, still open
        await store.append("s-1", new(1))
        assert await store.head_position() == a.position
        if erase == "truncate":
            await store.truncate_before("s-1", 2)
        else:
            await store.delete_stream("s-1", hard=True)
        assert await store.head_position() == a.position
        older.rollback()
    assert await store.head_position() > a.position  # B's, erased: positions are never reused


_delay: contextvars.ContextVar[float] = contextvars.ContextVar("delay", default=0.0)


async def _sleep_in_transaction() -> None:
    if (delay := _delay.get()) > 0:
        await asyncio.sleep(delay * random.random())


@pytest.mark.slow
async def test_torture_out_of_order_commits(store: PostgresEventStore) -> None:
    """16 concurrent writers, half sleeping inside their transaction: a live subscriber sees each event once, in order."""
    store._before_commit = _sleep_in_transaction
    writers, appends = 16, 40
    total = writers * sum(1 + i % 3 for i in range(appends))
    written: list[int] = []
    seen: list[RecordedEvent] = []

    async def subscriber(after: int, into: list[RecordedEvent]) -> None:
        subscription = store.subscribe(after=after)
        async for event in subscription:
            into.append(event)
            if len(into) == total:
                break
        await subscription.aclose()  # type: ignore[attr-defined]

    async def writer(w: int) -> None:
        _delay.set(0.05 if w % 2 else 0.0)
        for i in range(appends):
            result = await store.append(f"torture-{w % 5}", new(1 + i % 3, f"{w}-{i}"))
            written.extend(result.positions)
            await asyncio.sleep(0)

    live = asyncio.create_task(subscriber(0, seen))
    late_seen: list[RecordedEvent] = []
    await asyncio.sleep(0.1)
    tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
    await asyncio.sleep(0.5)
    late = asyncio.create_task(subscriber(0, late_seen))  # joins mid-way: catch-up then live
    await asyncio.gather(*tasks)
    await asyncio.wait_for(asyncio.gather(live, late), 30)
    assert len(written) == total

    positions = [r.position for r in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert sorted(positions) == sorted(written)
    assert [r.position for r in late_seen] == positions
    assert [r.position for r in await collect(store.read_all())] == positions
    for s in range(5):
        versions = [r.version for r in await collect(store.read_stream(f"torture-{s}"))]
        assert versions == list(range(len(versions)))


async def test_categories_in_global_order(store: PostgresEventStore) -> None:
    names = [f"cat{i}" for i in range(10)]
    written = [await store.append(f"{names[i % 10]}-{i}", new(1)) for i in range(40)]
    for chosen in (names[:1], names[:3], names):  # one scan, a merge of index scans, a filtered scan
        got = await collect(store.read_all(categories=chosen))
        want = [w.position for i, w in enumerate(written) if names[i % 10] in chosen]
        assert [r.position for r in got] == want
        assert [r.position for r in await collect(store.read_all(categories=chosen, limit=3))] == want[:3]


async def test_paged_reads(store: PostgresEventStore) -> None:
    await store.append("big-1", new(2500))
    assert [r.version for r in await collect(store.read_stream("big-1"))] == list(range(2500))
    assert [r.version for r in await collect(store.read_stream("big-1", backwards=True, limit=1200))] == list(
        range(2499, 1299, -1)
    )
    assert len(await collect(store.read_all(after=0))) == 2500
    assert len(await collect(store.read_all(limit=1001))) == 1001


async def test_transaction_commits_with_the_read_model(store: PostgresEventStore) -> None:
    async with store.transaction() as tx:
        assert tx.dialect == "postgresql"
        await tx.execute("CREATE TABLE read_model (k text PRIMARY KEY, v int)")
        await tx.execute("INSERT INTO read_model VALUES (?, ?)", ["a", 1])

    async def failing_projection() -> None:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO read_model VALUES ('b', 2)")
            raise RuntimeError("projection failed")

    with pytest.raises(RuntimeError, match="^projection failed$"):
        await failing_projection()
    async with store.transaction() as tx:
        assert await tx.execute("SELECT k, v FROM read_model ORDER BY k") == [("a", 1)]
        # the psycopg connection is there for what ``execute`` cannot say
        cursor = await tx.connection.execute("SELECT count(*) FROM read_model")
        assert await cursor.fetchone() == (1,)
    assert sql_store(store) is store


# -- faults -----------------------------------------------------------------------------------------


async def test_unreachable_server_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await open_store(f"postgresql://postgres@127.0.0.1:{port}/x?pool_timeout=1")
    assert time.monotonic() - started < 10


async def test_terminated_connections_are_replaced(store: PostgresEventStore, pg_server_dsn: str) -> None:
    await store.append("s-1", new(1))
    subscription = store.subscribe()
    assert (await anext(subscription)).version == 0
    dbname = store.conninfo.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
    result = await store.append("s-1", new(1))  # retried on a fresh connection
    assert result.version == 1
    assert (await asyncio.wait_for(anext(subscription), 10)).version == 1
    assert isinstance(subscription, AsyncGenerator)
    await subscription.aclose()


async def test_statement_timeout_is_unavailable(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?statement_timeout=0.3") as store:
        await store.append("s-1", new(1))
        async with store.transaction() as conn:
            await conn.execute("SELECT * FROM epoch_streams WHERE stream = 's-1' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="timed out") as info:
                await store.append("s-1", new(1))
            assert time.monotonic() - started < 5
            assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
        assert await store.stream_version("s-1") == 0


def _pg_ctl(*args: str) -> None:
    run = os.environ.get("EPOCH_TEST_PG_RUN", "").split()
    subprocess.run(
        [*run, f"{os.environ['EPOCH_TEST_PG_BIN']}/pg_ctl", "-D", os.environ["EPOCH_TEST_PG_DATA"], *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _stop_server() -> str:
    """Stop the test cluster; return the options to start it again with (port, socket dir, settings)."""
    data = os.environ["EPOCH_TEST_PG_DATA"]
    argv = shlex.split(Path(data, "postmaster.opts").read_text())[1:]
    options = [arg for i, arg in enumerate(argv) if arg != "-D" and (i == 0 or argv[i - 1] != "-D")]
    _pg_ctl("stop", "-m", "fast", "-w")
    return shlex.join(options)


def _start_server(options: str) -> None:
    data = os.environ["EPOCH_TEST_PG_DATA"]
    _pg_ctl("start", "-w", "-t", "30", "-l", f"{data}/restart.log", "-o", options)


needs_cluster = pytest.mark.skipif(
    not (os.environ.get("EPOCH_TEST_PG_DATA") and os.environ.get("EPOCH_TEST_PG_BIN")),
    reason="needs to stop and start the test cluster (EPOCH_TEST_PG_DATA/EPOCH_TEST_PG_BIN)",
)


@pytest.mark.slow
@needs_cluster
async def test_subscriber_and_writer_survive_a_server_restart(pg_dsn: str) -> None:
    url = pg_dsn + "?reconnect_timeout=30&pool_timeout=5&poll_interval=0.5"
    async with await PostgresEventStore.from_url(url) as store, await PostgresEventStore.from_url(url) as reader:
        acked: list[int] = []
        stop = asyncio.Event()

        async def write() -> None:
            i = 0
            while not stop.is_set():
                result = await store.append(f"restart-{i % 3}", new(2, str(i)))
                acked.extend(result.positions)
                i += 1
                await asyncio.sleep(0.005)

        seen: list[RecordedEvent] = []

        async def consume() -> None:
            async for event in reader.subscribe():
                seen.append(event)

        consumer = asyncio.create_task(consume())
        writer = asyncio.create_task(write())
        await asyncio.sleep(0.5)
        before = len(acked)
        options = await asyncio.to_thread(_stop_server)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_start_server, options)
        restarted = time.monotonic()
        while len(acked) < before + 20:  # the writer keeps going after the restart
            await asyncio.sleep(0.01)
            assert time.monotonic() - restarted < 10, "the writer did not recover within 10 s"
        stop.set()
        await asyncio.wait_for(writer, 60)
        waited = time.monotonic()
        while len(seen) < len(acked) and time.monotonic() - waited < 30:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a duplicate would show up now
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        positions = [r.position for r in seen]
        assert positions == sorted(set(positions))
        assert positions == sorted(acked)
        assert positions == [r.position for r in await collect(store.read_all())]


@pytest.mark.slow
@needs_cluster
async def test_server_down_is_unavailable_then_recovers(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?reconnect_timeout=0.5&pool_timeout=1") as store:
        await store.append("s-1", new(1))
        options = await asyncio.to_thread(_stop_server)
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.append("s-1", new(1))
            assert isinstance(info.value.__cause__, psycopg.Error)
            with pytest.raises(StoreUnavailable):
                await collect(store.read_stream("s-1"))
        finally:
            await asyncio.to_thread(_start_server, options)
        result = await store.append("s-1", new(1), 0)
        assert result.version == 1


# -- migrations -------------------------------------------------------------------------------------


async def test_migrate_command_is_idempotent(pg_dsn: str) -> None:
    runner = CliRunner()  # in a thread: the command runs its own event loop
    first = await asyncio.to_thread(runner.invoke, app, ["migrate", "--store", pg_dsn, "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["version_before"], report["version"]) == (0, LATEST_VERSION)
    assert [step["version"] for step in report["applied"]] == [number for number, _, _ in MIGRATIONS]
    second = await asyncio.to_thread(runner.invoke, app, ["migrate", "--store", pg_dsn])
    assert second.exit_code == 0, second.output
    assert second.output == f"schema already at version {LATEST_VERSION}; nothing to do\n"
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT version FROM epoch_schema_version ORDER BY version").fetchall() == [
            (number,) for number, _, _ in MIGRATIONS
        ]


async def test_migrate_false_refuses_a_missing_schema(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        await open_store(pg_dsn + "?migrate=false")
    assert (
        str(info.value)
        == f"the epoch schema is at version 0, {LATEST_VERSION} is needed: run `epoch migrate --store URL` (or open without ?migrate=false)"
    )
    async with open_store(pg_dsn) as store:  # creates the schema
        await store.append("s-1", new(1))
    async with open_store(pg_dsn + "?migrate=false") as store:
        assert await store.stream_version("s-1") == 0


async def test_concurrent_first_use_migrates_once(pg_dsn: str) -> None:
    stores = await asyncio.gather(*(PostgresEventStore.from_url(pg_dsn) for _ in range(4)))
    for opened in stores:
        await opened.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM epoch_schema_version").fetchone() == (len(MIGRATIONS),)


# -- many processes ---------------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from dataclasses import dataclass
    from epoch import Codec, CommandHandler, Decider, open_store

    @dataclass(frozen=True)
    class Add:
        amount: int

    @dataclass(frozen=True)
    class Added:
        amount: int
        total: int

    def decide(command, state):
        return [Added(command.amount, state + command.amount)]

    def evolve(state, event):
        return event.total

    async def main(url, worker, streams, commands):
        async with open_store(url + "?pool_max=4") as store:
            handler = CommandHandler(store, Decider(decide, evolve, 0), "counter", Codec([Added]), retries=50)
            for i in range(commands):
                # workers 0 and 1 run the same commands (same ids, same streams), as do 2 and 3:
                # whichever runs second must be a no-op
                group = worker // 2
                stream = (i * 7 + group) % streams
                command_id = f"cmd-{group}-{i}"
                await handler.execute(stream, Add(1), command_id=command_id)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    """
)


@pytest.mark.slow
async def test_four_processes_lose_no_update(pg_dsn: str, tmp_path: Path) -> None:
    pytest.importorskip("epoch.commands")
    streams, commands = 50, 150
    async with open_store(pg_dsn):  # migrate once up front
        pass
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)

    def run_workers() -> list[tuple[int, str]]:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), pg_dsn, str(w), str(streams), str(commands)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(4)
        ]
        return [(p.wait(timeout=120), p.communicate()[1]) for p in procs]

    for returncode, err in await asyncio.to_thread(run_workers):
        assert returncode == 0, err
    expected: dict[int, int] = {}
    for group in range(2):
        for i in range(commands):
            stream = (i * 7 + group) % streams
            expected[stream] = expected.get(stream, 0) + 1
    async with open_store(pg_dsn) as store:
        events = await collect(store.read_all())
        command_ids = [json.loads(e.metadata)["$command_id"] for e in events]
        assert len(command_ids) == len(set(command_ids)) == 2 * commands  # each applied once, none lost
        for s in range(streams):
            recorded = await collect(store.read_stream(f"counter-{s}"))
            assert len(recorded) == expected.get(s, 0)
            # no lost update: each event's total is one more than the previous one's
            assert [json.loads(e.data)["total"] for e in recorded] == list(range(1, len(recorded) + 1))


async def test_append_many_streams_one_round_trip_each(store: PostgresEventStore) -> None:
    """Sanity: appends are single statements (no explicit transaction) unless the test hook is set."""
    result = await store.append("s-1", new(100), NO_STREAM)
    assert result.version == 99 and len(result.positions) == 100
