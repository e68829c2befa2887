"""Personal data on the real SQL stores: what the database holds (never the plaintext; no key after a
forget), a forget seen by another OS process within a second, ``epoch copy`` SQLite -> PostgreSQL, and
``epoch forget``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from typer.testing import CliRunner, Result

from epoch import CommandHandler, KeyStore, open_store
from epoch.cli import app
from epoch.stores import keys_of, sql_store
from epoch.testing._personal_domain import Profile, Register, Rename, personal_codec, profiles
from tests.hostile import hostile_names, is_valid_name

ROOT = Path(__file__).resolve().parent.parent
RUNNER = CliRunner()
PLAIN = (b"ada@example.com", b"Ada Lovelace", b"Ada King")


async def _fill(url: str) -> None:
    async with open_store(url) as store:
        handler = CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
        await handler.execute("u1", Register("ada@example.com", "Ada Lovelace"), services="u1")
        await handler.execute("u1", Rename("Ada King"))
        await handler.execute("u2", Register("grace@example.com", "Grace Hopper"), services="u2")


async def test_the_sqlite_file_never_holds_the_plaintext_nor_a_forgotten_key(sqlite_url: str) -> None:
    await _fill(sqlite_url)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    async with open_store(sqlite_url) as store:
        table = keys_of(store)
        assert table is not None
        [key] = await table.read_keys(["u1"])
        await KeyStore.for_store(store).forget("u1")
    with sqlite3.connect(path) as connection:  # the store is closed: fold the log into the file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert connection.execute("SELECT count(*) FROM epoch_keys").fetchone() == (1,)  # u2's
    stored = path.read_bytes() + (
        path.with_name(path.name + "-wal").read_bytes() if path.with_name(path.name + "-wal").exists() else b""
    )
    for plain in PLAIN:
        assert plain not in stored
    assert key.key not in stored  # secure_delete zeroed the erased row


async def test_postgres_tables_never_hold_the_plaintext(pg_dsn: str) -> None:
    await _fill(pg_dsn)
    async with open_store(pg_dsn) as store:
        database = sql_store(store)
        assert database is not None
        async with database.transaction() as tx:
            rows = await tx.execute("SELECT data, metadata FROM epoch_events")
            keys = await tx.execute("SELECT subject, length(key) FROM epoch_keys ORDER BY subject")
    assert len(rows) == 3 and keys == [("u1", 32), ("u2", 32)]
    for data, metadata in rows:
        for plain in PLAIN:
            assert plain not in bytes(data) + bytes(metadata)


async def test_writers_giving_one_subject_its_first_key_at_once_both_work(sql_store_url: str) -> None:
    """Two store objects (their own connections, their own caches, as two processes) write the first
    event of one subject at the same moment: each stores a key of its own, and every event reads."""
    async with open_store(sql_store_url) as first, open_store(sql_store_url) as second:
        handlers = [
            CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
            for store in (first, second)
        ]
        await asyncio.gather(
            handlers[0].execute("a", Register("ada@example.com", "Ada"), services="same"),
            handlers[1].execute("b", Register("ada@elsewhere.example", "Ada"), services="same"),
        )
        table = keys_of(first)
        assert table is not None
        assert len(await table.read_keys(["same"])) == 2
    async with open_store(sql_store_url) as store:
        reader = CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
        assert (await reader.load("a")).state == Profile("same", "ada@example.com", "Ada")
        assert (await reader.load("b")).state == Profile("same", "ada@elsewhere.example", "Ada")
        assert await KeyStore.for_store(store).forget("same") == 2
        assert (await reader.load("b")).state == Profile("same", None, "anonymous")


@pytest.mark.slow
async def test_another_process_sees_a_forget_within_a_second(sql_store_url: str) -> None:
    await _fill(sql_store_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.personal_worker", sql_store_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert await asyncio.to_thread(worker.stdout.readline) == "ready\n"
        async with open_store(sql_store_url) as store:
            started = time.time()
            assert await KeyStore.for_store(store).forget("u1") == 1
        out, err = await asyncio.to_thread(worker.communicate, timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    word, seen = out.split()
    assert word == "forgotten"
    assert float(seen) - started < 1.0, float(seen) - started


async def epoch(*args: str) -> Result:
    """``epoch ARGS`` in a thread: the command runs its own event loop."""
    return await asyncio.to_thread(RUNNER.invoke, app, list(args))


async def test_epoch_copy_sqlite_to_postgres_keeps_a_forgotten_subject_unreadable(sqlite_url: str, pg_dsn: str) -> None:
    await _fill(sqlite_url)
    async with open_store(sqlite_url) as store:
        await KeyStore.for_store(store).forget("u2")
    done = await epoch("copy", sqlite_url, pg_dsn, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["copied"], report["keys"]) == (3, 1)
    async with open_store(pg_dsn) as copy:
        handler = CommandHandler(copy, profiles, "profile", personal_codec(KeyStore.for_store(copy)))
        assert (await handler.load("u1")).state == Profile("u1", "ada@example.com", "Ada King", 1)
        assert (await handler.load("u2")).state == Profile("u2", None, "anonymous")
        await KeyStore.for_store(copy).forget("u1")  # the copy's keys are its own
        assert (await handler.load("u1")).state == Profile("u1", None, None, 1)
    async with open_store(sqlite_url) as store:
        source = CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
        assert (await source.load("u1")).state == Profile("u1", "ada@example.com", "Ada King", 1)


async def test_epoch_forget(sqlite_url: str) -> None:
    await _fill(sqlite_url)
    done = await epoch("forget", "u1", "--store", sqlite_url)
    assert (done.exit_code, done.stdout) == (0, "forgot subject 'u1': 1 key(s) erased\n")
    again = await epoch("forget", "u1", "--store", sqlite_url, "--json")
    assert (again.exit_code, json.loads(again.stdout)) == (0, {"subject": "u1", "keys_erased": 0})
    none = await epoch("forget", "nobody", "--store", sqlite_url)
    assert none.stdout == "subject 'nobody' had no key: nothing to erase (nothing of it is readable)\n"
    bad = await epoch("forget", " u2", "--store", sqlite_url)
    assert (bad.exit_code, bad.stdout) == (2, "")
    assert bad.stderr == "error: subject ' u2' has leading or trailing whitespace\ntry 'epoch forget --help'\n"
    missing = await epoch("forget", "u2", "--store", sqlite_url + ".typo")
    assert (missing.exit_code, missing.stderr) == (1, f"error: no such store: {sqlite_url}.typo\n")
    async with open_store(sqlite_url) as store:
        handler = CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
        assert (await handler.load("u1")).state == Profile("u1", None, None, 1)
        assert (await handler.load("u2")).state == Profile("u2", "grace@example.com", "Grace Hopper")


@given(subject=hostile_names)
async def test_epoch_forget_takes_hostile_subjects(sqlite_url: str, subject: str) -> None:
    if not Path(sqlite_url.removeprefix("sqlite:///")).exists():  # one store for all the examples
        await _fill(sqlite_url)
    done = await epoch("forget", "--store", sqlite_url, "--json", "--", subject)  # "--": "-x" is a subject
    assert "Traceback" not in done.output
    if is_valid_name(subject, 256):
        assert (done.exit_code, json.loads(done.stdout)) == (0, {"subject": subject, "keys_erased": 0})
    else:
        assert done.exit_code == 2, done.output
        first, _, rest = done.stderr.partition("\n")
        assert first.startswith("error: subject ") and rest == "try 'epoch forget --help'\n", done.stderr
    async with open_store(sqlite_url) as store:
        table = keys_of(store)
        assert table is not None
        assert len([k async for k in table.export_keys()]) == 2  # u1's and u2's: nothing else was erased


def test_the_personal_data_contract_skips_without_the_crypto_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party store that keeps keys, tested where `cryptography` is not installed: each test of the
    suite is skipped with the extra's name, instead of failing on its first sealed field."""
    from epoch.stores.memory import MemoryEventStore
    from epoch.testing import contract_personal

    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(pytest.skip.Exception) as skipped:
        contract_personal._table(MemoryEventStore())
    assert str(skipped.value) == (
        "MemoryEventStore keeps keys, but cryptography is not installed: pip install '.[crypto]' in an epoch"
        " checkout (or the wheel with [crypto])"
    )
    monkeypatch.undo()
    assert keys_of(MemoryEventStore()) is not None
    assert contract_personal._table(MemoryEventStore()) is not None  # with the extra: no skip
