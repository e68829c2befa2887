"""PostgreSQL: per-stream order in the global log under many writer processes (guarantee 10), the schema
upgrade that brings it (version 1 to 2), and database errors that must not be retried (issue 8).

Against a real server (conftest's ``pg_dsn``: a fresh database per test) and real OS processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from epoch import ConfigurationError, RecordedEvent, StoreError, WrongExpectedVersion, open_store
from epoch.cli import app
from epoch.stores.postgres import PostgresEventStore
from epoch.stores.postgres.schema import MIGRATIONS
from epoch.testing import collect
from epoch.testing import new_events as new
from epoch.testing.contract_log import inversions

pytestmark = [pytest.mark.postgres]


# -- guarantee 10 with OS processes ---------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from epoch import ANY, NO_STREAM, STREAM_EXISTS, NewEvent, WrongExpectedVersion, open_store

    async def main(url, worker, rounds, start):
        async with open_store(url + "?pool_max=2") as store:
            while not os.path.exists(start):  # all processes begin together
                time.sleep(0.005)
            kind = worker % 3
            for i in range(rounds):
                events = [NewEvent("Happened", b'{"w": %d, "i": %d, "n": %d}' % (worker, i, n)) for n in range(2)]
                if kind == 0:
                    await store.append("hot-1", events, ANY)
                elif kind == 1:
                    await store.append("hot-1", events, STREAM_EXISTS)
                else:
                    expected = await store.stream_version("hot-1")
                    while True:
                        try:
                            await store.append("hot-1", events, expected)
                            break
                        except WrongExpectedVersion as exc:
                            expected = exc.actual
                side = NewEvent("Side", b'{"w": %d, "i": %d}' % (worker, i))
                await store.append(f"side-{worker}", [side], ANY)  # another stream in between

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    """
)


@pytest.mark.slow
async def test_eight_processes_on_one_stream_keep_its_order_and_copy_to_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    writers, rounds = 8, 45  # 8 * 45 * 2 = 720 events on the hot stream, 360 on the side streams
    async with open_store(pg_dsn) as store:  # migrates once, up front
        await store.append("hot-1", new(1, "seed"))
    script, start = tmp_path / "writer.py", tmp_path / "start"
    script.write_text(_WRITER)

    def run_writers() -> list[tuple[int, str]]:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), pg_dsn, str(w), str(rounds), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(writers)
        ]
        time.sleep(1.5)  # let every process connect
        start.touch()
        return [(p.wait(timeout=120), p.communicate()[1]) for p in procs]

    for returncode, err in await asyncio.to_thread(run_writers):
        assert returncode == 0, err
    async with open_store(pg_dsn) as store:
        logged = await collect(store.read_all())
        hot = [e for e in logged if e.stream == "hot-1"]
        assert len(hot) == 1 + writers * rounds * 2 == 721
        assert len(logged) == 721 + writers * rounds
        found = inversions(logged)
        assert found == [], f"{len(found)} inversions in {len(logged)} events, first {found[:5]}"
        assert [e.version for e in hot] == list(range(721))
        delivered: list[RecordedEvent] = []
        async for event in store.subscribe():
            delivered.append(event)
            if len(delivered) == len(logged):
                break
        assert [(e.stream, e.version) for e in delivered] == [(e.stream, e.version) for e in logged]

    # epoch copy to SQLite: it refuses a log whose streams are out of order, so it proves the order too.
    sqlite_url = f"sqlite:///{tmp_path / 'copy.db'}"
    copied = await asyncio.to_thread(CliRunner().invoke, app, ["copy", pg_dsn, sqlite_url, "--json"])
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.output)["copied"] == len(logged)
    async with open_store(sqlite_url) as copy:
        again = await collect(copy.read_all())
        assert [(e.stream, e.version, e.id, e.data) for e in again] == [
            (e.stream, e.version, e.id, e.data) for e in logged
        ]
        assert await copy.stream_version("hot-1") == 720


async def test_an_append_in_a_transaction_that_already_has_an_id_is_refused(pg_dsn: str) -> None:
    """A transaction whose id predates the stream's last writer may not append to it (it would sort first)."""
    async with open_store(pg_dsn) as store:
        await store.append("s-1", new(1))
        with psycopg.connect(pg_dsn) as old:  # a transaction (not autocommit) that takes its id now
            old.execute("SELECT pg_current_xact_id()")
            await store.append("s-1", new(1))  # a younger transaction writes version 1 and commits
            with pytest.raises(psycopg.Error) as info:
                old.execute(
                    "SELECT * FROM epoch_append('s-1', -1, ARRAY[%s]::uuid[], ARRAY['T'], ARRAY['\\x7b7d'::bytea],"
                    " ARRAY[''::bytea])",
                    (uuid.uuid4(),),
                )
            assert info.value.sqlstate == "EP002"
            assert info.value.diag.message_primary == (
                "epoch: s-1 was written by a transaction younger than this one: appending here would put its"
                " versions out of order in the global log"
            )
        assert [e.version for e in await collect(store.read_stream("s-1"))] == [0, 1]
        assert inversions(await collect(store.read_all())) == []


async def test_an_import_locks_its_streams_before_it_writes(pg_dsn: str, other_pg_dsn: str) -> None:
    """Several streams in one import transaction, while other writers append to other streams."""
    async with open_store("memory://") as source, open_store(pg_dsn) as target:
        for i in range(40):
            await source.append(f"s-{i % 5}", new(2, str(i)))
        events = await collect(source.read_all())

        async def noise() -> None:
            for i in range(30):
                await target.append(f"noise-{i % 3}", new(1, str(i)))

        positions, _ = await asyncio.gather(target.import_events(events), noise())  # type: ignore[attr-defined]
        assert len(positions) == 80
        logged = await collect(target.read_all())
        assert inversions(logged) == []
        assert [(e.stream, e.version) for e in logged if not e.stream.startswith("noise")] == [
            (e.stream, e.version) for e in events
        ]


# -- the schema upgrade: version 1 to 2 ------------------------------------------------------------


async def test_a_database_at_schema_1_upgrades_to_2_and_keeps_working(pg_dsn: str) -> None:
    version, description, sql = MIGRATIONS[0]
    assert version == 1
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # what epoch 0.1 created
        conn.execute(
            "CREATE TABLE epoch_schema_version (version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(sql)
        conn.execute("INSERT INTO epoch_schema_version (version, description) VALUES (1, %s)", (description,))
        append = "SELECT * FROM epoch_append(%s, %s, %s::uuid[], %s::text[], %s::bytea[], %s::bytea[])"
        for stream, expected in (("users-1", -2), ("users-1", 0), ("orders-1", -1), ("gone-1", -1)):
            conn.execute(append, (stream, expected, [uuid.uuid4()], ["Old"], [b"{}"], [b""]))
        conn.execute("SELECT epoch_delete('gone-1', 0)")

    with pytest.raises(ConfigurationError) as refused:
        await open_store(pg_dsn + "?migrate=false")
    assert str(refused.value) == (
        "the epoch schema is at version 1, 6 is needed: run `epoch migrate --store URL` (or open without ?migrate=false)"
    )
    async with open_store(pg_dsn) as store:  # upgrades on open
        with psycopg.connect(pg_dsn) as conn:
            versions = conn.execute("SELECT version FROM epoch_schema_version ORDER BY version").fetchall()
            assert versions == [(1,), (2,), (6,)]
        old = await collect(store.read_all())
        assert [(e.stream, e.version, e.type) for e in old] == [
            ("users-1", 0, "Old"),
            ("users-1", 1, "Old"),
            ("orders-1", 0, "Old"),
            ("gone-1", 0, "Old"),
        ]
        assert await store.stream_version("users-1") == 1
        assert await store.stream_version("gone-1") is None
        # Appends, guards and deletes work on the old streams through the new functions.
        assert (await store.append("users-1", new(2), 1)).version == 3
        with pytest.raises(WrongExpectedVersion) as wrong:
            await store.append("users-1", new(1), 1)
        assert (wrong.value.stream, wrong.value.expected, wrong.value.actual) == ("users-1", 1, 3)
        assert (await store.append("gone-1", new(1), None)).version == 1
        with pytest.raises(WrongExpectedVersion) as wrong_delete:
            await store.delete_stream("orders-1", 5)
        assert (wrong_delete.value.stream, wrong_delete.value.actual) == ("orders-1", 0)
        await store.delete_stream("orders-1", 0)
        assert await store.stream_version("orders-1") is None

        async def writer(w: int) -> None:
            for i in range(10):
                await store.append("users-1", new(1, f"{w}-{i}"))

        await asyncio.gather(*(writer(w) for w in range(8)))
        logged = await collect(store.read_all())
        assert inversions(logged) == []
        assert [e.version for e in logged if e.stream == "users-1"] == list(range(84))
    async with open_store(pg_dsn + "?migrate=false") as store:  # now current
        assert await store.stream_version("users-1") == 83


# -- item 6: a database error that is not a lost connection is raised at once ---------------------


async def test_subscribe_raises_on_a_broken_schema_instead_of_retrying(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?poll_interval=0.2") as store:
        await store.append("users-1", new(2))
        subscription = store.subscribe()
        first = await asyncio.wait_for(anext(subscription), 10)
        assert first.version == 0
        second = await asyncio.wait_for(anext(subscription), 10)
        assert second.version == 1
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # broken on purpose
            conn.execute("ALTER TABLE epoch_events RENAME COLUMN data TO data_moved")
        began = time.monotonic()
        with pytest.raises(StoreError) as info:
            await asyncio.wait_for(anext(subscription), 10)
        assert time.monotonic() - began < 5  # at the next poll, not after a retry loop
        assert str(info.value) == "PostgreSQL refused the operation: column e.data does not exist (SQLSTATE 42703)"
        assert (info.value.code, info.value.stream) == ("42703", None)
        with pytest.raises(StoreError) as read:
            await collect(store.read_all())
        assert read.value.code == "42703"


async def test_an_append_on_a_broken_schema_raises_at_once(pg_dsn: str) -> None:
    async with await PostgresEventStore.from_url(pg_dsn + "?reconnect_timeout=30") as store:
        await store.append("users-1", new(1))
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("REVOKE ALL ON epoch_events FROM PUBLIC")
            conn.execute("DROP FUNCTION epoch_append(text, bigint, uuid[], text[], bytea[], bytea[], timestamptz[])")
        began = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.append("users-1", new(1))
        assert time.monotonic() - began < 5  # not retried for reconnect_timeout
        assert info.value.code == "42883"
        assert info.value.stream == "users-1"
        assert str(info.value).startswith("users-1: PostgreSQL refused the operation: function epoch_append(")
        assert str(info.value).endswith(" does not exist (SQLSTATE 42883)")
        assert await store.stream_version("users-1") == 0
