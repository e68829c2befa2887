"""The SQLite store's one table from driver errors to epoch errors (``epoch.stores.sqlite.errors``): each
row met with a real ``sqlite3`` error, from a real file, and the exact error and message it becomes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from epoch.errors import DecodeError, StoreError, StoreFull, StoreUnavailable, WrongExpectedVersion
from epoch.records import ANY, NewEvent, RecordedEvent
from epoch.stores.sqlite import SQLiteEventStore
from epoch.stores.sqlite.errors import epoch_error, is_lock_conflict

LOCKED = "s-1: the database is locked: another connection held it for more than 0.2 s (database is locked)"


def events(n: int, size: int = 10) -> list[NewEvent]:
    return [NewEvent("Happened", b"x" * size) for _ in range(n)]


async def collect(iterator: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [event async for event in iterator]


def cause_of(error: BaseException) -> sqlite3.Error:
    cause = error.__cause__
    assert isinstance(cause, sqlite3.Error)
    return cause


async def test_a_full_file_is_store_full(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "full.db") as store:
        await store.append("s-1", events(1))
        pages = await store.run_in_transaction(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run_in_transaction(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        with pytest.raises(StoreFull) as info:
            await store.append("s-1", events(4, size=8000))
        assert str(info.value) == (
            "s-1: the database or disk is full: nothing of this write was stored;"
            " free space (or raise max_page_count) and retry"
        )
        assert info.value.stream == "s-1"
        assert cause_of(info.value).sqlite_errorname == "SQLITE_FULL"
        assert await store.stream_version("s-1") == 0


async def test_an_import_into_a_full_file_is_store_full(tmp_path: Path) -> None:
    """``import_events`` is the store's own work in a transaction of its own: its driver errors are mapped too."""
    async with SQLiteEventStore(tmp_path / "source.db") as source:
        await source.append("s-1", events(20, size=8000))
        recorded = await collect(source.read_all())
    async with SQLiteEventStore(tmp_path / "full.db") as store:
        await store.append("t-1", events(1))
        pages = await store.run_in_transaction(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run_in_transaction(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        with pytest.raises(StoreFull) as info:
            await store.import_events(recorded)
        assert str(info.value) == (
            "the database or disk is full: nothing of this write was stored; free space (or raise max_page_count) and retry"
        )
        assert cause_of(info.value).sqlite_errorname == "SQLITE_FULL"
        assert (await store.stream_version("s-1"), await store.head_position()) == (None, 1)


async def test_a_write_lock_held_elsewhere_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SQLiteEventStore(path, timeout=0.2) as store:
        await store.append("s-1", events(1))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.append("s-1", events(1))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert type(info.value) is StoreUnavailable
        assert str(info.value) == LOCKED
        assert cause_of(info.value).sqlite_errorname == "SQLITE_BUSY"
        assert is_lock_conflict(cause_of(info.value))
        assert (await store.append("s-1", events(1), 0)).version == 1


def test_a_table_locked_in_the_same_connection_is_unavailable() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x)")
    connection.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    reading = connection.execute("SELECT x FROM t")
    reading.fetchone()  # an unfinished statement keeps the table in use
    with pytest.raises(sqlite3.OperationalError) as info:
        connection.execute("DROP TABLE t")
    connection.close()
    assert info.value.sqlite_errorname == "SQLITE_LOCKED"
    error = epoch_error(info.value, 0.2, "s-1")
    assert type(error) is StoreUnavailable
    assert (
        str(error)
        == "s-1: the database is locked: another connection held it for more than 0.2 s (database table is locked)"
    )
    assert error.__cause__ is info.value
    assert is_lock_conflict(info.value)


async def test_a_damaged_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    async with SQLiteEventStore(path) as store:
        for i in range(50):
            await store.append(f"s-{i}", events(10, size=500))
    # Damage the streams table (what an append reads first) and the first pages of the events' rows
    # (what read_all reads first), wherever the schema's other tables put them; the header page stays.
    connection = sqlite3.connect(path)
    roots = dict(connection.execute("SELECT name, rootpage FROM sqlite_master"))
    connection.close()
    with path.open("r+b") as file:
        file.seek(4096 * (roots["streams"] - 1))
        file.write(b"\xff" * 4096)
        file.seek(4096 * max(roots.values()))  # page max + 1: the first page after every root
        file.write(b"\xff" * 4096 * 4)
    async with SQLiteEventStore(path) as store:
        with pytest.raises(StoreError) as read:
            await collect(store.read_all())
        assert (
            str(read.value)
            == "the database file is damaged (database disk image is malformed): restore it from a backup"
        )
        assert (read.value.stream, read.value.code) == (None, None)
        assert cause_of(read.value).sqlite_errorname == "SQLITE_CORRUPT"
        with pytest.raises(StoreError) as write:
            await store.append("s-1", events(1))
        assert str(write.value) == (
            "s-1: the database file is damaged (database disk image is malformed): restore it from a backup"
        )


async def test_a_file_that_is_no_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError) as info:
        await SQLiteEventStore.from_url(f"sqlite:///{path}")
    assert str(info.value) == "the file is not an SQLite database (file is not a database)"
    assert cause_of(info.value).sqlite_errorname == "SQLITE_NOTADB"
    assert path.read_text() == "these are my notes, not a database\n" * 200  # left as it was


async def test_a_database_this_process_cannot_write_is_a_store_error(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "ro.db") as store:
        await store.append("s-1", events(1))
        # The writer's own connection made read-only: the tests run as root, so file modes would not do.
        await store.run_in_transaction(lambda c: c.execute("PRAGMA query_only = ON").fetchall())
        with pytest.raises(StoreError) as info:
            await store.append("s-1", events(1))
        assert (
            str(info.value)
            == "s-1: the database cannot be written by this process (attempt to write a readonly database)"
        )
        assert cause_of(info.value).sqlite_errorname == "SQLITE_READONLY"
        assert await store.stream_version("s-1") == 0


async def test_a_value_over_the_sqlite_limit_is_a_store_error(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "big.db") as store:
        await store.run_in_transaction(lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100))
        with pytest.raises(StoreError) as info:
            await store.append("s-1", [*events(1), NewEvent("Happened", b"x" * 200)])
        assert str(info.value) == "s-1: a value is larger than SQLite allows (string or blob too big)"
        assert cause_of(info.value).sqlite_errorname == "SQLITE_TOOBIG"
        assert await store.stream_version("s-1") is None  # the whole append was rolled back
        await store.run_in_transaction(lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000_000))
        assert (await store.append("s-1", [NewEvent("Happened", b"x" * 200)])).version == 0


async def test_any_other_driver_error_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as info:
        await SQLiteEventStore.from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert type(info.value) is StoreUnavailable
    assert str(info.value) == "SQLite failed: unable to open database file"
    assert cause_of(info.value).sqlite_errorname == "SQLITE_CANTOPEN"
    assert not is_lock_conflict(cause_of(info.value))


def test_a_driver_error_without_a_code_is_unavailable() -> None:
    connection = sqlite3.connect(":memory:")
    connection.close()
    with pytest.raises(sqlite3.ProgrammingError) as info:
        connection.execute("SELECT 1")
    error = epoch_error(info.value, 10.0, "s-1")
    assert type(error) is StoreUnavailable
    assert str(error) == "s-1: SQLite failed: Cannot operate on a closed database."
    assert not is_lock_conflict(info.value)


def test_other_exceptions_pass_unchanged() -> None:
    epoch = WrongExpectedVersion("s-1", 0, 1)
    other = KeyError("boom")
    assert epoch_error(epoch, 10.0, "s-1") is epoch
    assert epoch_error(other, 10.0, "s-1") is other
    assert not is_lock_conflict(other)


async def test_the_writer_keeps_working_after_each_mapped_error(tmp_path: Path) -> None:
    """A mapped error ends only its own call: group commit goes on for the appends queued with it."""
    async with SQLiteEventStore(tmp_path / "on.db") as store:
        await store.run_in_transaction(lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100))
        calls = [store.append(f"s-{i}", [NewEvent("Happened", b"x" * (200 if i % 2 else 10))]) for i in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [str(r) for r in results if isinstance(r, StoreError)]
    assert failed == [f"s-{i}: a value is larger than SQLite allows (string or blob too big)" for i in range(1, 20, 2)]
    assert [r.stream for r in results if not isinstance(r, BaseException)] == [f"s-{i}" for i in range(0, 20, 2)]


# -- a row of the events table no append could have written (edited by hand, or corrupt) ------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("recorded_at = 'now'", "recorded_at 'now' is not an instant (microseconds since 1970)"),
        (f"recorded_at = {2**63 - 1}", f"recorded_at {2**63 - 1} is not an instant (microseconds since 1970)"),
        ("recorded_at = 1.5e300", "recorded_at 1.5e+300 is not an instant (microseconds since 1970)"),
        ("id = 'abc'", "id 'abc' is not bytes"),
        ("id = 7", "id 7 is not bytes"),
    ],
)
async def test_a_corrupt_events_row_is_a_decode_error_naming_its_event(
    tmp_path: Path, change: str, reason: str
) -> None:
    """Not a bare TypeError or ValueError from the row's conversion (guarantee 8): a DecodeError naming the
    stream, the version and the type, from every read that meets the row, and the other rows still read."""
    path = tmp_path / "corrupt.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", events(5))
        await store.append("t-1", events(1))
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE events SET {change} WHERE stream = 's-1' AND version = 2")
    connection.close()
    async with SQLiteEventStore(path) as store:
        for read in (store.read_stream("s-1"), store.read_all(), store.read_stream("s-1", backwards=True)):
            with pytest.raises(DecodeError) as info:
                await collect(read)
            assert type(info.value) is DecodeError
            assert str(info.value) == f"s-1: cannot decode event 'Happened' at version 2: {reason}"
            assert (info.value.stream, info.value.version, info.value.type) == ("s-1", 2, "Happened")
        assert [e.version for e in await collect(store.read_stream("s-1", limit=2))] == [0, 1]
        assert [e.stream for e in await collect(store.read_all(after=3))] == ["s-1", "s-1", "t-1"]
        assert [e.version for e in await collect(store.read_stream("t-1"))] == [0]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("recorded_at = 'now'", "recorded_at 'now' is not an instant (microseconds since 1970)"),
        (f"recorded_at = {2**63 - 1}", f"recorded_at {2**63 - 1} is not an instant (microseconds since 1970)"),
        (f"recorded_at = {-(2**63)}", f"recorded_at {-(2**63)} is not an instant (microseconds since 1970)"),
        ("recorded_at = x'00'", "recorded_at b'\\x00' is not an instant (microseconds since 1970)"),
    ],
)
async def test_an_append_answering_with_a_corrupt_stored_instant_is_a_decode_error(
    tmp_path: Path, change: str, reason: str
) -> None:
    """An empty append answers with the stream's last event, a replayed one with the stored event: when that
    row's recorded_at is no instant, the DecodeError a read of it raises (not a bare TypeError or
    ValueError), and nothing stored changes. An append that writes does not need the stored instant."""
    path = tmp_path / "corrupt.db"
    replayed = NewEvent("Happened", b"r")
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", [*events(1), replayed])
    with sqlite3.connect(path) as connection:
        connection.execute(f"UPDATE events SET {change} WHERE stream = 's-1' AND version = 1")
    connection.close()
    async with SQLiteEventStore(path) as store:
        for batch, expected in (([], ANY), ([replayed], 0)):  # an empty append, then a replayed one
            with pytest.raises(DecodeError) as info:
                await store.append("s-1", batch, expected_version=expected)
            assert type(info.value) is DecodeError
            assert str(info.value) == f"s-1: cannot decode event 'Happened' at version 1: {reason}"
            assert (info.value.stream, info.value.version, info.value.type) == ("s-1", 1, "Happened")
        assert await store.stream_version("s-1") == 1
        written = await store.append("s-1", events(1))
        assert (written.version, written.position, written.positions, written.replayed) == (2, 3, (3,), False)
        assert [e.version for e in await collect(store.read_stream("s-1", from_version=2))] == [2]
    with sqlite3.connect(path) as connection:
        stored = connection.execute("SELECT version, data FROM events WHERE stream = 's-1' ORDER BY version").fetchall()
        assert stored == [(0, b"x" * 10), (1, b"r"), (2, b"x" * 10)]
        assert connection.execute("SELECT typeof(recorded_at) FROM events WHERE version = 1").fetchone() == (
            ("text",) if "'now'" in change else ("blob",) if "x'00'" in change else ("integer",)
        )
    connection.close()
