"""PostgreSQL: the one table that maps driver errors to epoch's (``stores/postgres/pool.py``), row by row,
and the codes and codec the store shares with its plpgsql.

Each row is exercised with an error the real server raises (a statement timeout, a terminated backend,
a failed guard, a unique violation, a lock timeout, a deadlock, ...); only the conditions a test cannot
cause on a shared server (a full disk, a crash of another backend) use psycopg's own exception classes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from epoch import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DuplicateEventId,
    EpochError,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
    open_store,
)
from epoch.stores.postgres import PostgresEventStore
from epoch.stores.postgres.pool import ConnectionLost, IdsTaken, driver_errors, epoch_error
from epoch.stores.postgres.schema import MIGRATIONS
from epoch.stores.postgres.sql import Position, decode_position, encode_position, expected_code, positions_of

ROOT = Path(__file__).resolve().parent.parent
postgres = pytest.mark.postgres


def new(n: int = 1) -> list[NewEvent]:
    return [NewEvent("Happened", b'{"n": %d}' % i) for i in range(n)]


async def collect(iterator: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [event async for event in iterator]


def terminate_backends(server_dsn: str, dsn: str) -> int:
    """End every server process connected to ``dsn``'s database (as an administrator would), and wait until
    they are gone, so the next statement on their connections meets the end. Returns how many there were."""
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    return len(rows)


def mapped(exc: psycopg.Error, stream: str | None = "s-1") -> EpochError:
    return epoch_error(exc, stream, None)


# -- EP001: a failed guard is WrongExpectedVersion, with the actual version from DETAIL -------------


@postgres
async def test_a_failed_guard_is_wrong_expected_version_with_the_actual_version(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as store:
        await store.append("s-1", new(1))
        cases: list[tuple[ExpectedVersion | int, str]] = [
            (5, "s-1: expected version 5, actual 0"),
            (NO_STREAM, "s-1: expected version NO_STREAM, actual 0"),
            (2**70, f"s-1: expected version {2**70}, actual 0"),  # beyond 64 bits: never matches
        ]
        for expected, message in cases:
            with pytest.raises(WrongExpectedVersion) as info:
                await store.append("s-1", new(1), expected)
            assert str(info.value) == message
            assert (info.value.stream, info.value.expected, info.value.actual) == ("s-1", expected, 0)
            assert isinstance(info.value.__cause__, psycopg.Error)
            assert info.value.__cause__.sqlstate == "EP001"
        with pytest.raises(WrongExpectedVersion) as missing:
            await store.append("s-2", new(1), STREAM_EXISTS)
        assert str(missing.value) == "s-2: expected version STREAM_EXISTS, actual no stream"
        assert missing.value.actual is None
        with pytest.raises(WrongExpectedVersion) as delete:
            await store.delete_stream("s-1", 3)
        assert str(delete.value) == "s-1: expected version 3, actual 0"
        assert await store.stream_version("s-1") == 0
        assert await store.stream_version("s-2") is None


@postgres
async def test_ep001_outside_a_guarded_write_is_a_store_error(pg_dsn: str) -> None:
    """Without the write's expected version (a caller's own call of the function), EP001 is the server's refusal."""
    async with open_store(pg_dsn) as store:
        await store.append("s-1", new(1))
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as info:
            await conn.execute("SELECT epoch_delete('s-1', 7)")
    error = mapped(info.value)
    assert type(error) is StoreError
    assert (
        str(error)
        == "s-1: PostgreSQL refused the operation: epoch: s-1 is at version 0, not the expected one (SQLSTATE EP001)"
    )


# -- 23505: an id stored already --------------------------------------------------------------------


@postgres
async def test_an_id_stored_in_another_stream_is_duplicate_event_id(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn) as store, open_store("memory://") as source:
        event = NewEvent("Happened", b"{}")
        await store.append("s-1", [event])
        with pytest.raises(DuplicateEventId) as info:
            await store.append("s-2", [event, *new(1)], ANY)
        assert str(info.value) == f"s-2: event id {event.id} is already stored at s-1 version 0"
        assert (await store.append("s-1", [event], NO_STREAM)).version == 0  # a replay, even with a stale guard
        await source.append("t-1", [NewEvent("Happened", b"{}", id=event.id)])
        with pytest.raises(DuplicateEventId) as imported:
            await store.import_events(await collect(source.read_all()))
        assert str(imported.value) == f"t-1: event id {event.id} is already stored at s-1 version 0"
        assert await store.stream_version("t-1") is None
        assert await store.stream_version("s-2") is None


@postgres
async def test_a_unique_violation_is_ids_taken_a_store_error(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            await conn.execute("INSERT INTO t VALUES (1)")
    error = mapped(info.value)
    assert type(error) is IdsTaken
    assert isinstance(error, StoreError)
    assert str(error) == (
        's-1: PostgreSQL refused the operation: duplicate key value violates unique constraint "t_pkey" (SQLSTATE 23505)'
    )


# -- lost connections: ConnectionLost, retried by Connections.run -----------------------------------


async def lose_the_connection(pg_dsn: str, pg_server_dsn: str, options: str = "") -> PostgresEventStore:
    """A store whose one pooled connection the server has ended, after it appended one event to ``s-1``."""
    store = await PostgresEventStore.from_url(f"{pg_dsn}?pool_min=1&pool_max=1{options}")
    await store.append("s-1", new(1))
    assert terminate_backends(pg_server_dsn, pg_dsn) == 1
    return store


@postgres
async def test_a_terminated_backend_is_connection_lost_and_retried(pg_dsn: str, pg_server_dsn: str) -> None:
    async with await lose_the_connection(pg_dsn, pg_server_dsn) as store:
        assert await store.stream_version("s-1") == 0  # a read: retried on a new connection
    async with await lose_the_connection(pg_dsn, pg_server_dsn) as store:
        assert (await store.append("s-1", new(1))).version == 2  # an append: its ids make a retry safe
    async with await lose_the_connection(pg_dsn, pg_server_dsn) as store:
        with pytest.raises(ConnectionLost) as info:
            await store.delete_stream("s-1", 3)  # a delete is not retried
        assert str(info.value) == "s-1: PostgreSQL error: terminating connection due to administrator command"
        assert isinstance(info.value.__cause__, psycopg.errors.AdminShutdown)
        assert await store.stream_version("s-1") == 3


@postgres
async def test_a_lost_connection_past_reconnect_timeout_is_store_unavailable(pg_dsn: str, pg_server_dsn: str) -> None:
    async with await lose_the_connection(pg_dsn, pg_server_dsn, "&reconnect_timeout=0") as store:
        with pytest.raises(StoreUnavailable) as info:
            await store.stream_version("s-1")
        assert type(info.value) is ConnectionLost
        assert str(info.value) == "s-1: PostgreSQL error: terminating connection due to administrator command"


@postgres
async def test_no_free_connection_within_the_pool_timeout_is_connection_lost(pg_dsn: str) -> None:
    url = pg_dsn + "?pool_min=1&pool_max=1&pool_timeout=0.2&reconnect_timeout=0"
    async with await PostgresEventStore.from_url(url) as store, store.transaction():
        with pytest.raises(ConnectionLost) as info:
            await store.stream_version("s-1")
        assert str(info.value) == "s-1: no connection to PostgreSQL within the pool timeout"


@postgres
async def test_a_refused_connection_is_connection_lost() -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        await psycopg.AsyncConnection.connect("postgresql://u@127.0.0.1:1/x", connect_timeout=1)
    error = mapped(info.value, None)
    assert type(error) is ConnectionLost
    assert str(error) == (
        'PostgreSQL error: connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
        "\n\tIs the server running on that host and accepting TCP/IP connections?"
    )


async def test_opening_a_database_the_server_refuses_says_why_at_once(pg_server_dsn: str) -> None:
    # Before, the pool retried until its timeout (10 s) and said only "no connection to PostgreSQL
    # within the pool timeout"; the server's reason was in a psycopg log line.
    base = pg_server_dsn.rsplit("/", 1)[0]
    port = pg_server_dsn.rsplit(":", 1)[1].split("/")[0]
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as info:
        await open_store(f"{base}/epoch_no_such_database?pool_timeout=5")
    assert time.monotonic() - started < 4
    assert str(info.value) == (
        f'PostgreSQL error: connection failed: connection to server at "127.0.0.1", port {port} failed: FATAL:  '
        'database "epoch_no_such_database" does not exist'
    )


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (psycopg.errors.ConnectionFailure("connection failure"), "s-1: PostgreSQL error: connection failure"),
        (
            psycopg.errors.CrashShutdown("terminating connection because of crash of another server process"),
            "s-1: PostgreSQL error: terminating connection because of crash of another server process",
        ),
        (
            psycopg.errors.CannotConnectNow("the database system is starting up"),
            "s-1: PostgreSQL error: the database system is starting up",
        ),
        (psycopg.InterfaceError("the connection is closed"), "s-1: PostgreSQL error: the connection is closed"),
        (psycopg.OperationalError("the connection is closed"), "s-1: PostgreSQL error: the connection is closed"),
    ],
)
def test_what_a_new_connection_may_cure_is_connection_lost(exc: psycopg.Error, message: str) -> None:
    error = mapped(exc)
    assert type(error) is ConnectionLost
    assert str(error) == message


# -- what passes on its own: StoreUnavailable, not retried ------------------------------------------


@postgres
async def test_a_statement_timeout_is_store_unavailable_with_the_timeout_message(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?statement_timeout=0.3") as store:
        await store.append("s-1", new(1))
        async with store.transaction() as tx:
            await tx.execute("SELECT * FROM epoch_streams WHERE stream = 's-1' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await store.append("s-1", new(1))
            assert time.monotonic() - started < 5  # not retried
        assert type(info.value) is StoreUnavailable
        assert str(info.value) == "s-1: PostgreSQL statement timed out"
        assert isinstance(info.value.__cause__, psycopg.errors.QueryCanceled)
        assert await store.stream_version("s-1") == 0


@postgres
async def test_a_lock_timeout_is_store_unavailable(pg_dsn: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as setup,
        await psycopg.AsyncConnection.connect(pg_dsn) as holder,
        await psycopg.AsyncConnection.connect(pg_dsn) as waiter,
    ):
        await setup.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await setup.execute("INSERT INTO t VALUES (1)")
        await holder.execute("SELECT * FROM t FOR UPDATE")
        await waiter.execute("SET lock_timeout = '50ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable) as info:
            await waiter.execute("SELECT * FROM t FOR UPDATE")
    error = mapped(info.value)
    assert type(error) is StoreUnavailable
    assert str(error) == (
        's-1: PostgreSQL error: canceling statement due to lock timeout\nCONTEXT:  while locking tuple (0,1) in relation "t"'
    )


@postgres
async def test_a_deadlock_is_store_unavailable(pg_dsn: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as setup,
        await psycopg.AsyncConnection.connect(pg_dsn) as a,
        await psycopg.AsyncConnection.connect(pg_dsn) as b,
    ):
        await setup.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await setup.execute("INSERT INTO t VALUES (1), (2)")
        for conn in (a, b):
            await conn.execute("SET deadlock_timeout = '50ms'")
        await a.execute("UPDATE t SET id = id WHERE id = 1")
        await b.execute("UPDATE t SET id = id WHERE id = 2")
        outcomes = await asyncio.gather(
            a.execute("UPDATE t SET id = id WHERE id = 2"),
            b.execute("UPDATE t SET id = id WHERE id = 1"),
            return_exceptions=True,
        )
    errors = [outcome for outcome in outcomes if isinstance(outcome, psycopg.Error)]
    assert [type(e) for e in errors] == [psycopg.errors.DeadlockDetected]  # the server ends one of the two
    error = mapped(errors[0])
    assert type(error) is StoreUnavailable
    pattern = (  # the server's whole text, which names the two processes and one transaction each
        r"s-1: PostgreSQL error: deadlock detected\nDETAIL:  Process \d+ waits for ShareLock on transaction \d+;"
        r" blocked by process \d+\.\nProcess \d+ waits for ShareLock on transaction \d+; blocked by process \d+\."
        r"\nHINT:  See server log for query details\.\nCONTEXT:  while updating tuple \(0,\d\) in relation \"t\""
    )
    assert re.fullmatch(pattern, str(error)), str(error)


@postgres
async def test_a_serialization_failure_is_store_unavailable(pg_dsn: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as setup,
        await psycopg.AsyncConnection.connect(pg_dsn) as a,
        await psycopg.AsyncConnection.connect(pg_dsn) as b,
    ):
        await setup.execute("CREATE TABLE t (id int PRIMARY KEY)")
        await setup.execute("INSERT INTO t VALUES (1)")
        for conn in (a, b):
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await conn.execute("SELECT * FROM t")
        await a.execute("UPDATE t SET id = 10 WHERE id = 1")
        await a.commit()
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            await b.execute("UPDATE t SET id = 11 WHERE id = 1")
    error = mapped(info.value)
    assert type(error) is StoreUnavailable
    assert str(error) == "s-1: PostgreSQL error: could not serialize access due to concurrent update"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (psycopg.errors.DiskFull("no space left on device"), "s-1: PostgreSQL error: no space left on device"),
        (
            psycopg.errors.TooManyConnections("sorry, too many clients already"),
            "s-1: PostgreSQL error: sorry, too many clients already",
        ),
        (psycopg.errors.OutOfMemory("out of memory"), "s-1: PostgreSQL error: out of memory"),
    ],
)
def test_insufficient_resources_are_store_unavailable(exc: psycopg.Error, message: str) -> None:
    error = mapped(exc)
    assert type(error) is StoreUnavailable
    assert str(error) == message


# -- everything else: StoreError, with the server's one-line message and its SQLSTATE ---------------


@postgres
async def test_an_append_out_of_order_is_a_store_error(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as store:
        await store.append("s-1", new(1))
        async with await psycopg.AsyncConnection.connect(pg_dsn) as old:  # a transaction that takes its id now
            await old.execute("SELECT pg_current_xact_id()")
            await store.append("s-1", new(1))  # a younger transaction writes version 1 and commits
            with pytest.raises(psycopg.Error) as info:
                await old.execute(
                    "SELECT * FROM epoch_append('s-1', -1, ARRAY[%s]::uuid[], ARRAY['T'], ARRAY['\\x7b7d'::bytea],"
                    " ARRAY[''::bytea])",
                    (uuid.uuid4(),),
                )
    error = epoch_error(info.value, "s-1", ANY)
    assert type(error) is StoreError
    assert str(error) == (
        "s-1: PostgreSQL refused the operation: epoch: s-1 was written by a transaction younger than this one:"
        " appending here would put its versions out of order in the global log (SQLSTATE EP002)"
    )


@postgres
async def test_a_statement_the_server_refuses_is_a_store_error_without_the_statement(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError) as info:
            await conn.execute("SELEC 'secret'")
    error = mapped(info.value, None)
    assert type(error) is StoreError
    assert str(error) == 'PostgreSQL refused the operation: syntax error at or near "SELEC" (SQLSTATE 42601)'
    assert (error.code, error.stream) == ("42601", None)


@postgres
async def test_a_driver_error_on_a_closed_store_says_it_is_closed(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(StoreUnavailable) as info, driver_errors("s-1", closed=lambda: True):
            await conn.execute("SELECT 1/0")
    assert type(info.value) is StoreUnavailable
    assert str(info.value) == "s-1: the PostgreSQL store is closed"
    assert isinstance(info.value.__cause__, psycopg.errors.DivisionByZero)


# -- the store's transaction(): the connection's errors are epoch's, the caller's SQL keeps its own --


@postgres
async def test_a_transaction_maps_only_the_connection_errors(pg_dsn: str, pg_server_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?pool_min=1&pool_max=1") as store:
        with pytest.raises(psycopg.errors.UndefinedTable):
            async with store.transaction() as tx:
                await tx.execute("SELECT * FROM no_such_table")

        async def lose_it_inside() -> None:
            async with store.transaction() as tx:
                terminate_backends(pg_server_dsn, pg_dsn)
                await tx.execute("SELECT 1")

        with pytest.raises(ConnectionLost) as info:
            await lose_it_inside()
        assert str(info.value) == "PostgreSQL error: terminating connection due to administrator command"
        async with store.transaction() as tx:  # the pool replaced the connection
            assert await tx.execute("SELECT 1") == [(1,)]


# -- the codes and the codec shared with the plpgsql ------------------------------------------------


def test_expected_versions_travel_as_the_functions_codes() -> None:
    assert [expected_code(e) for e in (ANY, NO_STREAM, STREAM_EXISTS, 0, 7, 2**63 - 1, 2**63)] == [
        -1,
        -2,
        -3,
        0,
        7,
        2**63 - 1,
        -4,
    ]


def test_a_position_is_the_transaction_id_then_the_ordinal() -> None:
    assert encode_position(5, 7) == 21474836487
    assert decode_position(21474836487) == (5, 7)
    assert Position.decode(21474836487) == Position(xid=5, seq=7)
    assert Position(5, 2**32 - 1).encode() < Position(6, 0).encode()
    assert decode_position(0) == (0, 0)
    assert positions_of(5, 7, 3) == (21474836487, 21474836488, 21474836489)


def test_released_migrations_are_never_edited() -> None:
    """Migrations 1 and 2 are rendered from the constants now: what they send must stay what was released."""
    digests = [(version, hashlib.sha256(sql.encode()).hexdigest()) for version, _, sql in MIGRATIONS]
    assert digests[:2] == [
        (1, "2b1ea40e4987d0edc747d90560d110143b7510255c4eb3590e99f730c426c6e2"),
        (2, "cc26cfd220bb79689e946477ecfffa547f72989abbc001d3b01bdd948fbe0536"),
    ]


@postgres
async def test_the_schema_has_one_expected_version_guard(pg_dsn: str) -> None:
    async with open_store(pg_dsn):
        pass
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'epoch%%' AND prosrc LIKE '%%EP001%%' ORDER BY 1"
        )
        assert await cur.fetchall() == [("epoch_check_expected",)]


def test_without_psycopg_the_package_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import epoch, epoch.stores\n"
        "try:\n"
        "    import epoch.stores.postgres\n"
        "except epoch.MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "psycopg is not installed: pip install '.[postgres]' in an epoch checkout (or the wheel with [postgres])\n",
        "",
    )


def test_importing_epoch_does_not_import_psycopg() -> None:
    script = "import sys, epoch, epoch.stores, epoch.stores.memory; print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (done.returncode, done.stdout) == (0, "False\n")
