"""The PostgreSQL store's threads (``stores/postgres/threads.py``) and what running its statements there
means for a caller: one connection budget with ``transaction()``, no asyncio connection until a block
asks for one, a cancelled append that still ends in its thread, the caller's context in the thread.

The ``Threads`` tests need no server; the store's run against a real one (conftest's ``pg_dsn``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import psycopg
import pytest

from epoch.stores.postgres import PostgresEventStore
from epoch.stores.postgres.threads import Threads
from epoch.testing import new_events as new

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


async def test_a_call_returns_its_result_from_a_thread_of_its_own() -> None:
    threads = Threads(2, "t")
    try:
        name, ident = await threads.run(lambda: (threading.current_thread().name, threading.get_ident()))
        assert name == "t-1"
        assert ident != threading.get_ident()
    finally:
        threads.stop()


async def test_a_call_raises_its_exception_here() -> None:
    threads = Threads(1, "t")

    def fail() -> None:
        raise KeyError("missing")

    try:
        with pytest.raises(KeyError) as info:
            await threads.run(fail)
        assert str(info.value) == "'missing'"
    finally:
        threads.stop()


async def test_calls_in_sequence_stay_on_one_thread() -> None:
    threads = Threads(4, "t")
    try:
        names = {await threads.run(lambda: threading.current_thread().name) for _ in range(200)}
        assert names == {"t-1"}
    finally:
        threads.stop()


async def test_the_callers_context_goes_to_the_thread() -> None:
    threads = Threads(1, "t")
    try:
        _where.set("caller")
        assert await threads.run(_where.get) == "caller"
    finally:
        threads.stop()


async def test_threads_start_on_demand_up_to_the_size_and_calls_beyond_wait() -> None:
    threads = Threads(2, "t")
    gate = threading.Event()
    running: list[str] = []

    def hold() -> str:
        running.append(threading.current_thread().name)
        gate.wait(5)
        return threading.current_thread().name

    try:
        calls = [asyncio.create_task(threads.run(hold)) for _ in range(3)]
        deadline = time.monotonic() + 5
        while len(running) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert sorted(running) == ["t-1", "t-2"]  # the third waits: both threads are busy
        gate.set()
        names = await asyncio.gather(*calls)
        assert sorted(set(names)) == ["t-1", "t-2"]
        assert len(running) == 3
    finally:
        threads.stop()


def _live(prefix: str) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))


async def test_an_idle_thread_ends_and_a_new_one_starts_for_the_next_call() -> None:
    threads = Threads(2, "idle-test", idle_exit=0.05)
    try:
        assert await threads.run(lambda: threading.current_thread().name) == "idle-test-1"
        deadline = time.monotonic() + 5
        while _live("idle-test-") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert _live("idle-test-") == []
        assert await threads.run(lambda: threading.current_thread().name) == "idle-test-2"
    finally:
        threads.stop()


async def test_stopped_threads_refuse_calls() -> None:
    threads = Threads(1, "t")
    assert await threads.run(lambda: 1) == 1
    threads.stop()
    with pytest.raises(RuntimeError) as info:
        await threads.run(lambda: 2)
    assert str(info.value) == "t: the threads are stopped"


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
async def test_appends_and_reads_keep_pool_min_connections_and_transaction_adds_its_own(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=2&pool_max=4") as store:
        await store.append("s-1", new(2))
        assert [e.version async for e in store.read_stream("s-1")] == [0, 1]
        # the blocking pool's pool_min; the asyncio pool has opened none
        assert await _backends_settled(pg_dsn, 2) == 2
        await asyncio.sleep(0.2)
        assert _backends(pg_dsn) == 2  # and no more open later
        async with store.transaction() as tx:
            assert await tx.execute("SELECT 1") == [(1,)]
        assert await _backends_settled(pg_dsn, 3) == 3
    assert await _backends_settled(pg_dsn, 0) == 0


@pytest.mark.postgres
async def test_a_cancelled_append_still_ends_in_its_thread(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn) as store:
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
        release.set()
        store._before_commit = None
        deadline = time.monotonic() + 5
        while await store.stream_version("s-1") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert await store.stream_version("s-1") == 0  # committed after its caller was cancelled


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
