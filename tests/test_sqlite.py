"""What only the SQLite store can show: URLs, the file, threads, OS processes, crashes and locks.

The behaviour every store shares is in the contract suite (tests/test_contract.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from epoch.errors import ConfigurationError, DuplicateEventId, InvalidEvent, StoreUnavailable, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, AppendResult, NewEvent
from epoch.stores import open_store
from epoch.stores._sql import sql_store
from epoch.stores.sqlite import APPLICATION_ID, PAGE_SIZE, SCHEMA_VERSION, SQLiteEventStore
from epoch.testing import collect
from epoch.testing import new_events as new


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` (a fresh interpreter: a real OS process)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def store_threads(store: SQLiteEventStore) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("epoch-sqlite") and t.name.endswith(store.path)]


# -- URLs and settings -----------------------------------------------------------------------------


async def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///relative.db") as store:
        await store.append("s-1", new(1))
    assert (tmp_path / "relative.db").is_file()
    async with open_store(f"sqlite:///{tmp_path / 'relative.db'}") as store:  # the same file, absolute
        assert await store.stream_version("s-1") == 0


async def test_absolute_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub.db'}"
    assert url.startswith("sqlite:////")
    async with open_store(url) as store:
        assert isinstance(store, SQLiteEventStore)
        assert store.path == str(tmp_path / "sub.db")
        await store.append("s-1", new(2))
    assert (tmp_path / "sub.db").is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
async def test_in_memory_url(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store(url) as one, open_store(url) as two:
        assert isinstance(one, SQLiteEventStore) and one.in_memory
        written = await one.append("s-1", new(3))
        # reads and writes of one store see one database; two stores never share
        assert [e.position for e in await collect(one.read_all())] == list(written.positions)
        assert await one.stream_version("s-1") == 2
        assert await two.head_position() == 0
        sub = one.subscribe(after=written.position)
        later = asyncio.ensure_future(one.append("s-2", new(1)))
        assert (await anext(sub)).stream == "s-2"
        await sub.aclose()  # type: ignore[attr-defined]
        await later
    assert list(tmp_path.iterdir()) == []


async def test_url_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}?max_event_size=100&synchronous=full&timeout=0.5&readers=2"
    async with open_store(url) as store:
        assert isinstance(store, SQLiteEventStore)
        assert (store.max_event_size, store.synchronous, store.timeout, store.readers) == (100, "FULL", 0.5, 2)
        assert await store.run_in_transaction(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
        assert len(store_threads(store)) == 1 + 2  # the writer and two readers


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/x.db",
        "sqlite:///x.db?color=blue",
        "sqlite:///x.db?readers=many",
        "sqlite:///x.db?synchronous=sometimes",
        "sqlite:///x.db?max_event_size=0",
        "sqlite:///x.db?readers=0",
    ],
)
async def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        await open_store(url)


async def test_max_event_size_is_configurable(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "e.db", max_event_size=100) as store:
        await store.append("s-1", [NewEvent("T", b"x" * 90, b'{"a":1}')])  # 97 bytes
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [NewEvent("T", b"x" * 94, b'{"a":1}')])  # 101 bytes
        assert (
            str(info.value) == "s-1: invalid event at index 0: 101 bytes of data and metadata exceed the limit of 100"
        )
        assert await store.stream_version("s-1") == 0


async def test_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(StoreUnavailable) as info:
        await store.append("s-1", new(1))
    assert isinstance(info.value.__cause__, sqlite3.Error)
    await store.close()


# -- the file --------------------------------------------------------------------------------------


async def test_schema_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteEventStore(path)
    assert not path.exists()  # nothing is opened before the first call
    async with store:
        await store.append("users-1", new(1))
    with sqlite3.connect(path) as connection:
        pragma = {
            name: connection.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "user_version", "application_id")
        }
        assert pragma == {"journal_mode": "wal", "user_version": SCHEMA_VERSION, "application_id": APPLICATION_ID}
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "streams"} <= tables
        assert connection.execute("SELECT stream, version, category, length(id) FROM events").fetchall() == [
            ("users-1", 0, "users", 16)
        ]
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM events WHERE category = 'users' AND position > 5 ORDER BY position"
        ).fetchall()
        assert "events_category" in str(plan)


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with open_store(url) as store:
        first = await store.append("s-1", new(2))
        await store.delete_stream("s-1")
    async with open_store(url) as store:
        assert await store.stream_version("s-1") is None
        again = await store.append("s-1", new(1), NO_STREAM)
        assert (again.version, again.position) == (2, first.position + 1)
        [event] = await collect(store.read_stream("s-1"))
        assert event.recorded_at == again.recorded_at and event.id == (await store.get_event(event.id)).id  # type: ignore[union-attr]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteEventStore(path)
    with pytest.raises(ConfigurationError, match="newer"):
        await store.head_position()
    await store.close()


async def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA application_id = 7")
    with pytest.raises(ConfigurationError, match="not an epoch event store"):
        await open_store(f"sqlite:///{path}")


# -- threads, tasks, group commit ------------------------------------------------------------------


async def test_work_runs_off_the_event_loop_thread(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "t.db") as store:
        ident = await store.run_in_transaction(lambda c: threading.get_ident())
        assert ident != threading.get_ident()


async def test_one_failing_append_in_a_group_fails_alone(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "g.db") as store:
        await store.append("taken-1", new(1))
        [taken] = await collect(store.read_stream("taken-1"))
        calls = []
        for i in range(200):  # queued in one go, so the writer commits them in a few groups
            if i % 10 == 3:
                calls.append(store.append("taken-1", new(1), NO_STREAM))
            elif i % 10 == 7:
                calls.append(store.append(f"dup-{i}", [*new(1), NewEvent("T", b"{}", id=taken.id)]))
            else:
                calls.append(store.append(f"free-{i}", new(3), NO_STREAM))
        results = await asyncio.gather(*calls, return_exceptions=True)
    wrong = [r for r in results if isinstance(r, WrongExpectedVersion)]
    duplicate = [r for r in results if isinstance(r, DuplicateEventId)]
    good = [r for r in results if isinstance(r, AppendResult)]
    assert (len(wrong), len(duplicate), len(good)) == (20, 20, 160)
    assert all(r.actual == 0 for r in wrong)
    assert all((r.existing_stream, r.existing_version) == ("taken-1", 0) for r in duplicate)
    # appends shared transactions (the same recorded_at), yet each kept its own dense positions
    assert len({r.recorded_at for r in good}) < len(good)
    positions = [p for r in good for p in r.positions]
    assert len(positions) == len(set(positions)) == 480
    async with SQLiteEventStore(tmp_path / "g.db") as store:
        assert await store.stream_version("taken-1") == 0
        assert await store.stream_version("dup-7") is None
        logged = [e.position for e in await collect(store.read_all())]
        assert logged == sorted([taken.position, *positions])


async def test_replays_in_a_group_return_the_first_results(tmp_path: Path) -> None:
    """Guarantee 5 inside group commit: a replay answers with the first result and writes nothing, and the
    appends committed with it keep dense positions (found by the version check or by the unique id)."""
    async with SQLiteEventStore(tmp_path / "replay.db") as store:
        batches = {f"replay-{i}": new(2) for i in range(100)}
        firsts = [await store.append(stream, batch, NO_STREAM) for stream, batch in batches.items()]
        calls = []
        for i, (stream, batch) in enumerate(batches.items()):
            calls.append(store.append(stream, batch, NO_STREAM if i % 2 else ANY))
            calls.append(store.append(f"fresh-{i}", new(1), NO_STREAM))
        results = await asyncio.gather(*calls)
        assert results[0::2] == [replace(first, replayed=True) for first in firsts]
        fresh = results[1::2]
        assert [r.positions for r in fresh] == [(201 + i,) for i in range(100)]
        assert len({r.recorded_at for r in fresh}) < len(fresh)  # they shared transactions
        assert await store.head_position() == 300
        assert [await store.stream_version(stream) for stream in batches] == [1] * 100


async def test_threads_with_their_own_loops_share_one_store(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "threads.db")
    streams, threads, tasks, rounds = 3, 4, 5, 10

    async def task(t: int, k: int) -> None:
        for i in range(rounds):
            stream = f"shared-{(t + k + i) % streams}"
            while True:  # optimistic concurrency: re-read, retry
                version = await store.stream_version(stream)
                try:
                    await store.append(stream, new(1, tag=f"{t}.{k}.{i}."), NO_STREAM if version is None else version)
                    break
                except WrongExpectedVersion:
                    continue

    async def thread_main(t: int) -> None:
        await asyncio.gather(*(task(t, k) for k in range(tasks)))

    workers = [threading.Thread(target=asyncio.run, args=(thread_main(t),)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    try:
        events = await collect(store.read_all())
        assert len(events) == threads * tasks * rounds
        assert len({e.data for e in events}) == len(events)
        assert [e.position for e in events] == sorted({e.position for e in events})
        for s in range(streams):
            versions = [e.version for e in await collect(store.read_stream(f"shared-{s}"))]
            assert versions == list(range(len(versions)))
    finally:
        await store.close()


# -- reading in pages ------------------------------------------------------------------------------


async def test_reads_cross_page_boundaries(tmp_path: Path) -> None:
    total = 2 * PAGE_SIZE + 345
    async with SQLiteEventStore(tmp_path / "pages.db") as store:
        for chunk in range(0, total, 500):
            await store.append("big-1", new(min(500, total - chunk), tag=f"{chunk}."))
            await store.append(f"other-{chunk}", new(2))
            await store.append(f"third-{chunk}", new(1))
        versions = [e.version for e in await collect(store.read_stream("big-1"))]
        assert versions == list(range(total))
        backwards = [
            e.version for e in await collect(store.read_stream("big-1", from_version=total - 10, backwards=True))
        ]
        assert backwards == list(range(total - 10, -1, -1))
        limited = [e.version for e in await collect(store.read_stream("big-1", from_version=5, limit=PAGE_SIZE + 1))]
        assert limited == list(range(5, PAGE_SIZE + 6))
        everything = await collect(store.read_all())
        assert [e.position for e in everything] == list(range(1, len(everything) + 1))
        for names in (["big"], ["other", "third"], ["third", "big", "other", "big"]):
            chosen = [e.position for e in await collect(store.read_all(after=7, categories=names))]
            assert chosen == [e.position for e in everything if e.position > 7 and e.category in names]
        assert (
            len(await collect(store.read_all(after=3, limit=PAGE_SIZE + 2, categories=["big", "third"])))
            == PAGE_SIZE + 2
        )
        # leaving a read early (with the next page already requested) disturbs nothing
        partial = store.read_all()
        assert (await anext(partial)).position == 1
        await partial.aclose()  # type: ignore[attr-defined]
        assert await store.head_position() == len(everything)


async def test_reads_by_many_categories_cross_page_boundaries(tmp_path: Path) -> None:
    # 1,200 names: six statements of at most 200 arms (SQLite runs 500 terms in a compound SELECT at most),
    # each page merged from theirs in position order; a page's events come from names far apart.
    names = [f"c{i}" for i in range(1200)]
    async with SQLiteEventStore(tmp_path / "many.db") as store:
        for round in range(PAGE_SIZE // 4 + 3):
            for i in (1199, 0, 600, 201):
                await store.append(f"c{i}-1", new(1, f"{round}"))
            await store.append("other-1", new(1))
        everything = await collect(store.read_all())
        wanted = [e.position for e in everything if e.category != "other"]
        assert len(wanted) > PAGE_SIZE
        read = [e.position for e in await collect(store.read_all(categories=names))]
        assert read == wanted  # in order, each once, across pages
        limited = [e.position for e in await collect(store.read_all(after=5, limit=PAGE_SIZE + 3, categories=names))]
        assert limited == [p for p in wanted if p > 5][: PAGE_SIZE + 3]


async def test_read_all_is_a_snapshot_of_when_it_began(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "snap.db") as store:
        await store.append("s-1", new(PAGE_SIZE + 5))
        seen = 0
        async for _ in store.read_all():
            if seen == 0:
                await store.append("s-2", new(3))
            seen += 1
        assert seen == PAGE_SIZE + 5


# -- locks, transactions, closing ------------------------------------------------------------------


async def test_a_locked_database_is_unavailable_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with open_store(f"sqlite:///{path}?timeout=0.2") as store:
        assert isinstance(store, SQLiteEventStore)
        await store.append("s-1", new(1))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked") as info:
                await store.append("s-1", new(2))
            assert 0.15 < time.monotonic() - started < 5
            assert info.value.stream == "s-1"
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            with pytest.raises(StoreUnavailable):
                await store.delete_stream("s-1")
            with pytest.raises(StoreUnavailable):
                await store.run_in_transaction(lambda c: None)
            assert len(await collect(store.read_all())) == 1  # WAL: readers are not blocked
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await store.stream_version("s-1") == 0 and await store.head_position() == 1
        assert (await store.append("s-1", new(1), 0)).version == 1  # and the store works again


async def test_run_in_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "tx.db") as store:
        await store.run_in_transaction(
            lambda c: c.execute("CREATE TABLE IF NOT EXISTS model (k TEXT PRIMARY KEY, v INT)")
        )

        def write_then_fail(connection: sqlite3.Connection) -> None:
            connection.execute("INSERT INTO model VALUES ('a', 1)")
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):  # the caller's own exception, unchanged
            await store.run_in_transaction(write_then_fail)
        assert await store.run_in_transaction(lambda c: c.execute("SELECT count(*) FROM model").fetchone()[0]) == 0

        def write_both(connection: sqlite3.Connection) -> bool:
            connection.execute("INSERT INTO model VALUES ('b', 2)")
            connection.execute("INSERT INTO model VALUES ('c', 3)")
            return connection.in_transaction

        assert await store.run_in_transaction(write_both) is True
    with sqlite3.connect(tmp_path / "tx.db") as connection:
        assert connection.execute("SELECT k, v FROM model ORDER BY k").fetchall() == [("b", 2), ("c", 3)]


async def test_transaction_runs_async_sql_atomically(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "tx.db") as store:
        assert sql_store(store) is store
        async with store.transaction() as tx:
            assert tx.dialect == "sqlite"
            await tx.execute("CREATE TABLE model (k TEXT PRIMARY KEY, v INT)")
            await tx.execute("INSERT INTO model VALUES (?, ?)", ["a", 1])

        async def failing() -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO model VALUES ('b', 2)")
                raise KeyError("boom")

        with pytest.raises(KeyError, match="^'boom'$"):
            await failing()
        async with store.transaction() as tx:
            assert await tx.execute("SELECT k, v FROM model ORDER BY k") == [("a", 1)]


async def test_close_stops_threads_and_subscriptions(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "c.db", readers=3)
    await store.append("s-1", new(1))
    threads = store_threads(store)
    assert len(threads) == 4
    subscription = store.subscribe()
    assert (await anext(subscription)).stream == "s-1"
    waiting = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    await asyncio.gather(store.close(), store.close())
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(waiting, 5)
    for thread in threads:
        thread.join(5)  # close() returns when the writer's last act is done: it is exiting
        assert not thread.is_alive()
    with pytest.raises(StoreUnavailable):
        await store.head_position()
    await store.close()


# -- OS processes ----------------------------------------------------------------------------------

APPEND_WITH_RETRIES = """
    import asyncio, json, os, sys
    from epoch.errors import WrongExpectedVersion
    from epoch.records import NO_STREAM, NewEvent
    from epoch.stores import open_store

    async def main(url, worker, count, streams, barrier):
        async with open_store(url) as store:
            open(f"{barrier}.{worker}", "w").close()
            while not os.path.exists(barrier):  # start together, so that the appends race
                await asyncio.sleep(0.005)
            for i in range(count):
                stream = f"shared-{(worker + i) % streams}"
                while True:
                    version = await store.stream_version(stream)
                    event = NewEvent("Appended", json.dumps({"worker": worker, "i": i}).encode())
                    try:
                        await store.append(stream, [event], NO_STREAM if version is None else version)
                        break
                    except WrongExpectedVersion:
                        continue

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
"""


@pytest.mark.slow
async def test_processes_append_concurrently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'procs.db'}"
    workers, count, streams = 4, 150, 3
    barrier = tmp_path / "go"
    children = [
        run_child(APPEND_WITH_RETRIES, url, str(w), str(count), str(streams), str(barrier)) for w in range(workers)
    ]
    while not all(Path(f"{barrier}.{w}").exists() for w in range(workers)):
        for child in children:
            if child.poll() is not None:  # a child died before the start: show why
                pytest.fail(f"a writer exited early ({child.returncode}): {child.communicate()[1]}")
        await asyncio.sleep(0.01)
    barrier.touch()
    outputs = await asyncio.gather(*(asyncio.to_thread(child.communicate, timeout=60) for child in children))
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    async with open_store(url) as store:
        events = await collect(store.read_all())
        assert sorted((json.loads(e.data)["worker"], json.loads(e.data)["i"]) for e in events) == [
            (w, i) for w in range(workers) for i in range(count)
        ]
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))
        for s in range(streams):
            versions = [e.version for e in await collect(store.read_stream(f"shared-{s}"))]
            assert versions == list(range(workers * count // streams))


APPEND_BATCHES_FOREVER = """
    import asyncio, json, random, sys
    from epoch.records import NewEvent
    from epoch.stores import open_store

    async def main(url):
        rng = random.Random()
        async with open_store(url) as store:
            for batch in range(10**9):
                size = rng.randint(1, 200)
                events = [NewEvent("Part", json.dumps({"batch": batch, "size": size, "index": i}).encode()) for i in range(size)]
                await store.append(f"batch-{batch % 7}", events)
                print(batch, flush=True)

    asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("after_batches", [3, 40])
async def test_a_killed_writer_leaves_whole_batches(tmp_path: Path, after_batches: int) -> None:
    path = tmp_path / "crash.db"
    child = run_child(APPEND_BATCHES_FOREVER, f"sqlite:///{path}")
    assert child.stdout is not None
    for _ in range(after_batches):  # the child reports each committed batch and goes on at once
        assert await asyncio.to_thread(child.stdout.readline), child.stderr.read() if child.stderr else ""
    child.send_signal(signal.SIGKILL)
    await asyncio.to_thread(child.wait, 10)
    child.stdout.close()
    child.stderr.close()  # type: ignore[union-attr]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    async with open_store(f"sqlite:///{path}") as store:
        events = await collect(store.read_all())
        batches: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            batches[json.loads(event.data)["batch"]].append(json.loads(event.data))
        assert len(batches) >= after_batches
        assert sorted(batches) == list(range(len(batches)))  # no batch missing in between
        for parts in batches.values():
            assert [p["index"] for p in parts] == list(range(parts[0]["size"]))
        for s in range(7):
            versions = [e.version for e in await collect(store.read_stream(f"batch-{s}"))]
            assert versions == list(range(len(versions)))
        assert (await store.append("batch-0", new(1))).position == events[-1].position + 1


APPEND_ONE = """
    import asyncio, sys
    from epoch.records import NewEvent
    from epoch.stores import open_store

    async def main(url):
        async with open_store(url) as store:
            await store.append("elsewhere-1", [NewEvent("FromAnotherProcess", b"{}")])

    asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
async def test_subscribe_sees_another_process_within_a_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub.db'}"
    async with open_store(url) as store:
        await store.append("here-1", new(1))
        subscription = store.subscribe()
        assert (await anext(subscription)).stream == "here-1"
        received = asyncio.ensure_future(anext(subscription))
        child = run_child(APPEND_ONE, url)
        _, err = await asyncio.to_thread(child.communicate, timeout=30)
        assert child.returncode == 0, err
        committed = time.monotonic()  # the child committed before it exited
        event = await asyncio.wait_for(received, 5)
        assert time.monotonic() - committed < 1.0
        assert (event.stream, event.type) == ("elsewhere-1", "FromAnotherProcess")
        await subscription.aclose()  # type: ignore[attr-defined]
