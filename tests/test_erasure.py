"""Erasure is physical (DESIGN §8): after a hard delete, a truncation or a scavenge, no table holds the bytes.

SQLite: the file itself, read as bytes after a WAL checkpoint, no longer contains them (``secure_delete``).
PostgreSQL: no row of any table holds them, and after ``VACUUM`` no page of the events table either.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from epoch import NewEvent, open_store
from epoch.stores import EventStore
from epoch.stores.sqlite import SQLiteEventStore


def marker(name: str) -> bytes:
    return f"SECRET-{name}-{uuid.uuid4().hex}".encode()


async def write_and_erase(store: EventStore) -> list[bytes]:
    """Write marked events (in data, in metadata, small and large), erase them every way; the markers."""
    gone, cut, old, large = marker("gone"), marker("cut"), marker("old"), marker("large")
    await store.append("keep-1", [NewEvent("T", b"KEEP-THIS-ONE")])
    await store.append("gone-1", [NewEvent("T", gone), NewEvent("T", b"{}", b'{"note": "%s"}' % gone)])
    await store.append("cut-1", [NewEvent("T", cut), NewEvent("T", large * 500), NewEvent("T", b"after")])
    await store.append("old-1", [NewEvent("T", old), NewEvent("T", b"newest")])
    await store.set_stream_limits("old-1", max_count=1)
    return [gone, cut, old, large]


async def erase(store: EventStore) -> None:
    await store.delete_stream("gone-1", hard=True)
    await store.truncate_before("cut-1", 2)
    assert await store.scavenge() == 1


def checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    connection.close()


def stored_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_sqlite_erased_bytes_leave_the_file(tmp_path: Path) -> None:
    path = tmp_path / "epoch.db"
    async with SQLiteEventStore(path) as store:
        markers = await write_and_erase(store)
    checkpoint(path)  # the worst case: the markers are in the main file's pages, not only in the WAL
    assert all(m in stored_bytes(path) for m in markers)
    async with SQLiteEventStore(path) as store:
        await erase(store)
    checkpoint(path)
    data = stored_bytes(path)
    assert b"KEEP-THIS-ONE" in data and b"newest" in data  # what is kept is found, so absence means something
    assert [m for m in markers if m in data] == []


@pytest.mark.postgres
async def test_postgres_erased_bytes_leave_every_table(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as store:
        markers = await write_and_erase(store)
        await erase(store)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("VACUUM (FULL, ANALYZE)")  # rewrites every table (and its TOAST) without the dead rows
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables"
            ).fetchall()
        ]
        assert "public.epoch_events" in tables
        for table in tables:
            for found in [*markers, b"KEEP-THIS-ONE"]:
                hits = conn.execute(
                    f"SELECT count(*) FROM {table} t WHERE position(%s::bytea IN convert_to(t::text, 'UTF8')) > 0"
                    " OR position(%s IN t::text) > 0",
                    (found, found.hex()),
                ).fetchone()
                assert hits is not None
                expected = 1 if found == b"KEEP-THIS-ONE" and table == "public.epoch_events" else 0
                assert (table, found, hits[0]) == (table, found, expected)
        pages = conn.execute("SELECT pg_relation_size('epoch_events') / current_setting('block_size')::int").fetchone()
        assert pages is not None
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        for block in range(pages[0]):
            page = conn.execute("SELECT get_raw_page('epoch_events', %s)", (block,)).fetchone()
            assert page is not None
            assert [m for m in markers if m in bytes(page[0])] == []


async def test_a_sqlite_file_at_schema_1_upgrades_and_its_streams_can_be_erased(tmp_path: Path) -> None:
    from epoch.stores.sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    number, _, statements = MIGRATIONS[0]
    assert number == 1
    with sqlite3.connect(path) as connection:  # a file as epoch 0.1 left it, with one stream of two events
        connection.execute("PRAGMA journal_mode = WAL").fetchall()
        for statement in statements:
            connection.execute(statement)
        for version in (0, 1):
            connection.execute(
                "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at)"
                " VALUES (?, 'old-1', ?, ?, 'T', ?, x'', 'old', 0)",
                (version + 1, version, uuid.uuid4().bytes, b"OLD-%d" % version),
            )
        connection.execute("INSERT INTO streams (stream, version) VALUES ('old-1', 1)")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    async with SQLiteEventStore(path) as store:
        assert [e.version async for e in store.read_stream("old-1")] == [0, 1]
        await store.truncate_before("old-1", 1)
        assert [e.data async for e in store.read_all()] == [b"OLD-1"]
        await store.delete_stream("old-1", hard=True)
        assert (await store.append("new-1", [NewEvent("T", b"{}")])).position == 3  # never reused
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)  # every migration applied
    connection.close()
