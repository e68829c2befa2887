"""The PostgreSQL store behind a real transaction-pooling PgBouncer (``pool_mode = transaction``, started by
scripts/services.sh), with ``?pooler=transaction``: the whole store contract, snapshots, query snapshots,
subscriptions woken by the poll alone, and racing writers that share the pooler's server connections."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from epoch import (
    NO_STREAM,
    Codec,
    CommandHandler,
    ConfigurationError,
    EventStore,
    NewEvent,
    WrongExpectedVersion,
    open_store,
)
from epoch.stores.postgres import PostgresEventStore
from epoch.stores.postgres.url import prepare_options
from epoch.testing.contract import EventStoreContract
from epoch.testing.contract_query_snapshots import QuerySnapshotContract
from epoch.testing.contract_snapshots import Add, Added, SnapshotContract, counter

pytestmark = pytest.mark.postgres


@pytest.fixture
def bouncer_url(pg_dsn: str) -> str:
    """``pg_dsn``'s database through the pooler."""
    base = os.environ.get("EPOCH_TEST_PGBOUNCER_URL")
    if not base:
        message = "set EPOCH_TEST_PGBOUNCER_URL (scripts/services.sh pgbouncer_up) to test behind PgBouncer"
        if os.environ.get("EPOCH_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return f"{base}/{pg_dsn.rsplit('/', 1)[1]}?pooler=transaction&poll_interval=0.05"


@pytest.fixture
async def store(bouncer_url: str) -> AsyncIterator[EventStore]:
    async with open_store(bouncer_url) as opened:
        yield opened


class TestEventStoreBehindPgBouncer(EventStoreContract):
    """The whole contract, every statement through the transaction pooler."""


class TestSnapshotsBehindPgBouncer(SnapshotContract):
    pass


class TestQuerySnapshotsBehindPgBouncer(QuerySnapshotContract):
    pass


async def test_the_store_prepares_nothing_and_listens_nowhere(store: EventStore, pg_dsn: str, bouncer_url: str) -> None:
    assert isinstance(store, PostgresEventStore) and store.pooler == "transaction"
    handler = CommandHandler(store, counter, "tally", Codec([Added]))

    async def first_event() -> int:
        async for recorded in store.subscribe():
            return recorded.position
        raise AssertionError("the subscription ended")

    waiting = asyncio.create_task(first_event())
    await asyncio.sleep(0.2)  # the subscription is polling by now
    started = time.monotonic()
    result = await handler.execute("1", Add(5, times=3))
    assert await asyncio.wait_for(waiting, 5) == result.events[0].position
    assert time.monotonic() - started < 2  # the poll (every 0.05 s) woke it, with no NOTIFY heard
    for _ in range(20):  # the same statements again: none was prepared on a server connection
        assert (await handler.load("1")).state.total == 15
    assert await _prepared_on_the_last_server_connection(bouncer_url) == 0
    with psycopg.connect(pg_dsn, autocommit=True) as direct:  # the server, past the pooler
        listening = direct.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
        ).fetchone()
        listeners = direct.execute("SELECT count(*) FROM epoch_listeners").fetchone()
    assert (listening, listeners) == ((0,), (0,))


async def _prepared_on_the_last_server_connection(bouncer_url: str) -> int:
    """The prepared statements of the server session the pooler gave out last. PgBouncer hands server
    connections out last in, first out, so a statement through it runs where the store's last one ran
    (a session of one's own, past the pooler, would only ever see its own: none)."""
    conninfo = bouncer_url.split("?", 1)[0]
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None) as check:
        row = await (await check.execute("SELECT count(*) FROM pg_prepared_statements")).fetchone()
    assert row is not None
    return int(row[0])


async def test_prepared_statements_asked_for_behind_the_pooler(bouncer_url: str) -> None:
    """``prepared_statements=on`` keeps them behind a transaction pooler (for PgBouncer 1.22+ with
    ``max_prepared_statements``): the store's statements are prepared on the server connection it used.
    One caller at a time here, so that PgBouncer 1.18, which does not track them, serves it too."""
    async with open_store(bouncer_url + "&prepared_statements=on") as store:
        assert isinstance(store, PostgresEventStore) and store.prepared_statements
        handler = CommandHandler(store, counter, "tally", Codec([Added]))
        await handler.execute("1", Add(2, times=2))
        for _ in range(5):
            assert (await handler.load("1")).state.total == 4
        assert await _prepared_on_the_last_server_connection(bouncer_url) >= 2  # the read and the append


async def test_racing_writers_share_the_poolers_connections(bouncer_url: str) -> None:
    """64 appends racing for version 0 of one stream from 4 stores of 16 connections each (the pooler
    has 40 server connections): exactly one wins, the others see the winner's version."""
    stores = [await PostgresEventStore.from_url(bouncer_url, pool_max=16) for _ in range(4)]
    try:

        async def claim(store: EventStore, n: int) -> int | WrongExpectedVersion:
            try:
                await store.append("race-1", [NewEvent("Claimed", f'{{"n":{n}}}'.encode())], NO_STREAM)
            except WrongExpectedVersion as lost:
                return lost
            return n

        outcomes = await asyncio.gather(*(claim(stores[n % 4], n) for n in range(64)))
        winners = [o for o in outcomes if isinstance(o, int)]
        assert len(winners) == 1
        assert all(str(o) == "race-1: expected version NO_STREAM, actual 0" for o in outcomes if not isinstance(o, int))
        events = [r async for r in stores[0].read_stream("race-1")]
        assert [(e.version, e.data) for e in events] == [(0, f'{{"n":{winners[0]}}}'.encode())]
    finally:
        for opened in stores:
            await opened.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pooler=bogus", "bad value for pooler: 'bogus' (use none, session or transaction)"),
        ("pooler=", "bad value for pooler: '' (use none, session or transaction)"),
        ("pooler=statement", "bad value for pooler: 'statement' (use none, session or transaction)"),
    ],
)
async def test_a_bad_pooler_is_refused(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await PostgresEventStore.from_url(f"postgresql://nobody@127.0.0.1:1/none?{query}")
    assert str(caught.value) == message
    with pytest.raises(ConfigurationError) as given:
        PostgresEventStore("postgresql://nobody@127.0.0.1:1/none", pooler="Transaction")
    assert str(given.value) == "bad value for pooler: 'Transaction' (use none, session or transaction)"


def test_the_url_option_takes_any_case() -> None:
    _, options = PostgresEventStore.conninfo_of("postgresql://nobody@127.0.0.1:1/none?pooler=TRANSACTION")
    assert options == {"pooler": "transaction"}
    _, options = PostgresEventStore.conninfo_of("postgresql://nobody@127.0.0.1:1/none?pooler=Session")
    assert options == {"pooler": "session"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("?pooler=session", True),
        ("?pooler=transaction", False),
        ("?prepared_statements=off", False),
        ("?pooler=transaction&prepared_statements=on", True),
        ("?pooler=session&prepared_statements=false", False),
    ],
)
async def test_prepared_statements_follow_the_pooler_unless_asked(pg_dsn: str, query: str, expected: bool) -> None:
    """On the server itself: whether the store's own statements are prepared in the sessions it uses
    (``transaction()`` takes the warm connection the statements before it ran on)."""
    async with open_store(pg_dsn + query) as store:
        assert isinstance(store, PostgresEventStore) and store.prepared_statements is expected
        await store.append("p-1", [NewEvent("Noted", b"{}")], NO_STREAM)
        assert [e.version async for e in store.read_stream("p-1")] == [0]
        async with store.transaction() as tx:
            names = [row[0] for row in await tx.execute("SELECT name FROM pg_prepared_statements")]
    assert (len(names) >= 2) is expected and (not names) is (not expected)


def test_a_libpq_before_17_never_deallocates_behind_a_transaction_pooler(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg deallocates with ``DEALLOCATE`` before libpq 17, which PgBouncer refuses: then none is."""
    assert prepare_options("transaction", True) == (0, None)  # this libpq closes them with a protocol message
    monkeypatch.setattr(psycopg.pq, "version", lambda: 160_004)
    assert prepare_options("transaction", True) == (0, sys.maxsize)
    assert prepare_options("none", True) == (0, None)  # no pooler: DEALLOCATE is fine
    assert prepare_options("transaction", None) == (None, None)
    store = PostgresEventStore("postgresql://nobody@127.0.0.1:1/none", pooler="transaction", prepared_statements=True)
    assert store._db.prepared_max == sys.maxsize


@pytest.mark.parametrize("value", ["on", 1, "yes", 0.0])
def test_a_bad_prepared_statements_value_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        PostgresEventStore("postgresql://nobody@127.0.0.1:1/none", prepared_statements=value)  # type: ignore[arg-type]
    assert str(caught.value) == f"bad value for prepared_statements: {value!r} (use True, False or None)"


async def test_a_bad_prepared_statements_url_value_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await PostgresEventStore.from_url("postgresql://nobody@127.0.0.1:1/none?prepared_statements=sometimes")
    assert str(caught.value) == "bad value for prepared_statements in the store URL: 'sometimes' (use true or false)"
