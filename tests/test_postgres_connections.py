"""The PostgreSQL store's connections (``stores/postgres/pool.py``) and what running every statement on
the caller's event loop means for a caller: one pool of ``pool_min`` to ``pool_max`` connections for
appends, reads and ``transaction()`` blocks, no thread of the store's own, a cancelled append that is
rolled back and leaves its connection usable, the commit hook in the caller's context. Against a real
server (conftest's ``pg_dsn``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import psycopg
import pytest

from epoch.errors import StoreError, StoreUnavailable, WrongExpectedVersion
from epoch.stores.postgres import PostgresEventStore, warm
from epoch.testing import new_events as new

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


# -- the store ------------------------------------------------------------------------------------


def _backends(pg_dsn: str) -> int:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _backends_settled(pg_dsn: str, expected: int) -> int:
    """The backends once their count is ``expected``, or after 5 s: pool connections open in the
    background, and a closed connection's backend ends a moment later (on a loaded machine, later still)."""
    deadline = time.monotonic() + 5
    while (count := _backends(pg_dsn)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return count


@pytest.mark.postgres
async def test_appends_reads_and_transactions_share_one_pool_of_pool_min_connections(pg_dsn: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=2&pool_max=4") as store:
        await store.append("s-1", new(2))
        assert [e.version async for e in store.read_stream("s-1")] == [0, 1]
        assert await _backends_settled(pg_dsn, 2) == 2
        async with store.transaction() as tx:  # an idle pooled connection: no new one
            assert await tx.execute("SELECT 1") == [(1,)]
            assert _backends(pg_dsn) == 2
        await asyncio.sleep(0.2)
        assert _backends(pg_dsn) == 2  # and no more open later
        # no thread of the store's own: at most the loop's executor, which resolves host names
        new_threads = [t.name for t in threading.enumerate() if t.ident not in before]
        assert [name for name in new_threads if not name.startswith("asyncio_")] == []
    assert await _backends_settled(pg_dsn, 0) == 0


@pytest.mark.postgres
async def test_pool_max_bounds_appends_and_transactions_together(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=2&pool_timeout=0.3") as store:
        async with store.transaction(), store.transaction():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await store.append("s-1", new(1))
            assert time.monotonic() - started >= 0.3
            assert str(info.value) == "s-1: no connection to PostgreSQL within the pool timeout"
        assert (await store.append("s-1", new(1))).version == 0  # free again


@pytest.mark.postgres
async def test_a_cancelled_append_is_rolled_back_and_its_connection_serves_the_next(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=1") as store:
        release = asyncio.Event()
        entered = asyncio.Event()

        async def hold() -> None:
            entered.set()
            await release.wait()

        store._before_commit = hold
        append = asyncio.create_task(store.append("s-1", new(1)))
        await asyncio.wait_for(entered.wait(), 5)
        append.cancel()
        with pytest.raises(asyncio.CancelledError):
            await append
        store._before_commit = None
        assert await store.stream_version("s-1") is None  # cancelled before its commit: nothing written
        result = await store.append("s-1", new(1))  # the one connection, back in the pool, clean
        assert (result.version, [e.version async for e in store.read_stream("s-1")]) == (0, [0])


@pytest.mark.postgres
async def test_a_read_cancelled_mid_statement_leaves_its_connection_usable(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=1") as store:
        await store.append("s-1", new(3))

        async def slow(conn: Any) -> None:
            await conn.execute("SELECT pg_sleep(5)")

        call = asyncio.create_task(store._db.run(slow))
        await asyncio.sleep(0.3)  # the statement is running at the server
        started = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert time.monotonic() - started < 2  # psycopg cancelled it at the server, rather than waiting 5 s
        assert [e.version async for e in store.read_stream("s-1")] == [0, 1, 2]


@pytest.mark.postgres
async def test_the_hook_runs_on_the_loop_in_the_callers_context(pg_dsn: str) -> None:
    seen: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    async def hook() -> None:
        seen.append((_where.get(), threading.get_ident() == loop_thread))

    async with await PostgresEventStore.from_url(pg_dsn) as store:
        store._before_commit = hook
        _where.set("command")
        result = await store.append("s-1", new(1))
        assert (result.version, seen) == (0, [("command", True)])


# -- warm connections (stores/postgres/warm.py) ------------------------------------------------------


def _count_getconn(store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store's requests to its pool (``calls[0]``)."""
    pool = store._db.apool
    calls = [0]
    getconn = pool.getconn

    async def counted(timeout: float | None = None) -> Any:
        calls[0] += 1
        return await getconn(timeout)

    monkeypatch.setattr(pool, "getconn", counted)
    return calls


async def _pid(store: PostgresEventStore) -> int:
    async def pid(conn: Any) -> int:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        return int(row[0])

    return await store._db.run(pid)


@pytest.mark.postgres
async def test_a_lone_callers_statements_share_one_warm_connection_without_asking_the_pool(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=2&pool_max=4") as store:
        calls = _count_getconn(store, monkeypatch)
        first = await _pid(store)
        for version in range(10):
            assert (await store.append("s-1", new(1), version - 1 if version else None)).version == version
            assert [e.version async for e in store.read_stream("s-1")][-1] == version
        async with store.transaction() as tx:
            assert await tx.execute("SELECT pg_backend_pid()") == [(first,)]
        assert await _pid(store) == first
        assert calls[0] == 1  # the first statement's; the 22 after it took the warm connection
        assert [conn.info.backend_pid for conn, _ in store._db.warm.idle] == [first]


@pytest.mark.postgres
async def test_work_that_fails_gives_its_connection_back_to_the_pool_not_to_the_warm_ones(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=1") as store:
        await store.append("s-1", new(1))
        assert len(store._db.warm.idle) == 1
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new(1), 5)
        assert str(info.value) == "s-1: expected version 5, actual 0"
        # ... whose ids the store then looked up, in a statement that went well: warm again
        assert len(store._db.warm.idle) == 1

        async def divide(conn: Any) -> None:
            await conn.execute("SELECT 1 / 0")

        with pytest.raises(StoreError) as error:
            await store._db.run(divide)
        assert str(error.value) == "PostgreSQL refused the operation: division by zero (SQLSTATE 22012)"
        assert store._db.warm.idle == []

        async def failing_block() -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO epoch_streams (stream, version) VALUES ('t-1', 0)")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await failing_block()
        assert store._db.warm.idle == []
        # the pool rolled the block back and gave the connection out again: the only one (pool_max=1)
        assert (await store.append("s-1", new(1), 0)).version == 1
        assert [e.version async for e in store.read_stream("t-1")] == []


@pytest.mark.postgres
async def test_warm_connections_go_back_to_the_pool_after_keep_warm_even_when_the_store_is_quiet(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warm, "KEEP_WARM", 0.2)
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=2&pool_max=2") as store:
        calls = _count_getconn(store, monkeypatch)
        await asyncio.gather(store.append("s-1", new(1)), store.append("s-2", new(1)))
        assert (len(store._db.warm.idle), calls[0]) == (2, 2)
        deadline = time.monotonic() + 5
        while store._db.apool.get_stats()["pool_available"] != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (store._db.warm.idle, store._db.apool.get_stats()["pool_available"]) == ([], 2)
        await store.append("s-1", new(1), 0)
        assert (len(store._db.warm.idle), calls[0]) == (1, 3)  # from the pool again, then warm
        # One kept KEEP_WARM seconds goes back after its work, busy or not.
        conn, since = await store._db.warm.take()
        await store._db.warm.give(conn, since - 0.2, True)
        assert (store._db.warm.idle, store._db.apool.get_stats()["pool_available"]) == ([], 2)


@pytest.mark.postgres
async def test_warm_connections_never_hold_a_callers_connection_back(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=2&pool_timeout=0.3") as store:
        await asyncio.gather(store.append("s-1", new(1)), store.append("s-2", new(1)))
        assert len(store._db.warm.idle) == 2  # all of pool_max, none left in the pool
        async with store.transaction() as one, store.transaction() as two:  # both warm ones, at once
            assert await one.execute("SELECT 1") == [(1,)]
            assert await two.execute("SELECT 2") == [(2,)]
        assert (await store.append("s-1", new(1), 0)).version == 1


@pytest.mark.postgres
async def test_a_warm_connection_the_server_ended_is_replaced_and_the_append_lands_once(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=2&pool_max=2") as store:
        await asyncio.gather(store.append("s-1", new(1)), store.append("s-2", new(1)))
        pids = sorted(c.info.backend_pid for c, _ in store._db.warm.idle)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,)).fetchall()
        assert ended == [(True,), (True,)]
        assert (await store.append("s-1", new(1), 0)).version == 1
        assert [e.version async for e in store.read_stream("s-1")] == [0, 1]
        assert await _pid(store) not in pids
