"""NOTIFY only while someone listens (migration 7, issue 11): appends wake subscriptions of any process at
once, notify nobody when no subscription listens, and lose no wake-up while a subscription starts. The
subscriptions here poll once a minute, so only a NOTIFY can deliver within the tests' bounds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from epoch import NewEvent, RecordedEvent
from epoch.stores.postgres import PostgresEventStore
from tests.test_commands import Open, handler_for

ROOT = Path(__file__).resolve().parent.parent
QUIET = 60.0  # the safety poll: never reached by a test


def one(name: str = "Seen") -> list[NewEvent]:
    return [NewEvent(name, b"{}")]


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresEventStore]:
    async with PostgresEventStore(pg_dsn, poll_interval=QUIET) as opened:
        yield opened


async def raw_listener(pg_dsn: str) -> psycopg.AsyncConnection[Any]:
    """A LISTEN of its own, not registered: it hears a NOTIFY only when epoch_append sends one."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    await conn.execute("LISTEN epoch_events")
    return conn


async def heard(conn: psycopg.AsyncConnection[Any], within: float = 0.5) -> list[str]:
    return [notify.payload async for notify in conn.notifies(timeout=within)]


async def listeners(pg_dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        row = await (await conn.execute("SELECT count(*) FROM epoch_listeners")).fetchone()
        assert row is not None
        return int(row[0])


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.01)


async def test_appends_notify_only_while_a_subscription_listens(store: PostgresEventStore, pg_dsn: str) -> None:
    raw = await raw_listener(pg_dsn)
    async with raw:
        await store.append("users-1", one())
        assert await heard(raw) == []  # nobody registered: no NOTIFY, no commit-time lock
        subscription = store.subscribe(after=(await store.head_position()))
        first = asyncio.ensure_future(anext(subscription))
        await until(lambda: _count_is(pg_dsn, 1))
        await store.append("orders-1", one())
        assert (await asyncio.wait_for(first, 5)).stream == "orders-1"
        assert await heard(raw) == ["orders"]
        await subscription.aclose()  # type: ignore[attr-defined]
        assert await listeners(pg_dsn) == 0  # the last subscription gone, the listener unregistered
        await store.append("users-2", one())
        assert await heard(raw) == []


async def _only_live_listeners(pg_dsn: str, count: int) -> bool:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT count(*), count(*) FILTER (WHERE pid = 0) FROM epoch_listeners")
        ).fetchone()
        assert row is not None
        return (row[0], row[1]) == (count, 0)


async def _count_is(pg_dsn: str, count: int) -> bool:
    return await listeners(pg_dsn) == count


async def test_a_subscription_wakes_at_once_for_another_process(store: PostgresEventStore, pg_dsn: str) -> None:
    await handler_for(store).execute(0, Open("ada"))  # what the worker's deposits need
    after = await store.head_position()
    seen: list[RecordedEvent] = []

    async def follow() -> None:
        async for event in store.subscribe(after=after):
            seen.append(event)
            if len(seen) == 3:
                return

    follower = asyncio.create_task(follow())
    await until(lambda: _count_is(pg_dsn, 1))
    started = time.monotonic()
    writer = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.workers", pg_dsn, "0", "3", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (writer.returncode, writer.stdout, writer.stderr) == (0, "3\n", "")
    await asyncio.wait_for(follower, 10)
    assert time.monotonic() - started < QUIET / 2
    assert [(e.stream, e.version, e.type) for e in seen] == [("account-0", v, "Deposited") for v in (1, 2, 3)]


async def test_no_wake_up_is_lost_while_a_subscription_starts(pg_dsn: str) -> None:
    """An append that found no listener, still open when a subscription registers: registering waits for
    its commit (so the subscription's next read sees it) instead of letting it commit unnotified."""
    async with (
        PostgresEventStore(pg_dsn, poll_interval=QUIET) as writer,
        PostgresEventStore(pg_dsn, poll_interval=QUIET) as reader,
    ):
        inside, release = asyncio.Event(), asyncio.Event()

        async def before_commit() -> None:
            inside.set()
            await release.wait()

        writer._before_commit = before_commit
        append = asyncio.create_task(writer.append("users-1", one()))
        await asyncio.wait_for(inside.wait(), 10)  # epoch_append ran, found no listener; not committed yet
        subscription = reader.subscribe()
        first = asyncio.ensure_future(anext(subscription))
        await until(lambda: _registration_tried(pg_dsn))
        await asyncio.sleep(0.2)
        assert await listeners(pg_dsn) == 0  # refused (or waiting) while the append is still open
        assert not first.done()
        release.set()
        await append
        event = await asyncio.wait_for(first, 5)
        assert (event.stream, event.version) == ("users-1", 0)
        await subscription.aclose()  # type: ignore[attr-defined]


async def _registration_tried(pg_dsn: str) -> bool:
    """Whether a session ran (or runs) ``epoch_listen``: pg_stat_activity shows each session's last statement."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        row = await (
            await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT epoch_listen(%%'")
        ).fetchone()
        assert row is not None
        return int(row[0]) >= 1


async def test_a_listener_left_behind_is_removed_by_the_next_registration(
    store: PostgresEventStore, pg_dsn: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("INSERT INTO epoch_listeners (pid, started) VALUES (0, now())")  # a session gone
    raw = await raw_listener(pg_dsn)
    async with raw:
        await store.append("users-1", one())
        assert await heard(raw) == ["users"]  # a row left behind costs a notify, never a lost wake-up
        subscription = store.subscribe()
        assert (await asyncio.wait_for(anext(subscription), 5)).stream == "users-1"
        await until(lambda: _only_live_listeners(pg_dsn, 1))  # its own row; the one left behind is gone
        await subscription.aclose()  # type: ignore[attr-defined]
        assert await listeners(pg_dsn) == 0
        await store.append("users-2", one())
        assert await heard(raw) == []


async def test_a_registration_by_another_role_keeps_the_listeners_it_cannot_see(
    store: PostgresEventStore, pg_dsn: str
) -> None:
    """Without pg_read_all_stats, another role's sessions show no backend_start: their rows must stay."""
    role = "epoch_notify_other"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        try:
            subscription = store.subscribe()
            waiting = asyncio.ensure_future(anext(subscription))
            await until(lambda: _count_is(pg_dsn, 1))
            other_dsn = pg_dsn.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
            assert other_dsn != pg_dsn
            async with await psycopg.AsyncConnection.connect(other_dsn, autocommit=True) as other:
                await other.execute("SELECT epoch_listen(true)")
                assert await listeners(pg_dsn) == 2  # its own row, and the one of the session it cannot see
            await store.append("users-1", one())
            assert (await asyncio.wait_for(waiting, 5)).stream == "users-1"
            await subscription.aclose()  # type: ignore[attr-defined]
        finally:
            await admin.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            await admin.execute(f"DROP ROLE {role}")
