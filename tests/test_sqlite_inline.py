"""Appends on the caller's thread (``stores/sqlite/here.py``): a lone append skips the writer thread's two
hand-offs; concurrent ones share one group commit there (the writer's when the lock is held elsewhere); the loop is never blocked by a lock
held elsewhere, and it runs its other work between a loop of appends; the WAL is still checkpointed."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from epoch import open_store
from epoch.errors import ConfigurationError, WrongExpectedVersion
from epoch.records import NO_STREAM, AppendResult
from epoch.stores.sqlite import SQLiteEventStore, work, writer
from epoch.stores.sqlite.here import CHECKPOINT_EVERY, HERE_GROUP
from epoch.testing import collect
from epoch.testing import new_events as new


@pytest.fixture
def append_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each append's work ran on, in order."""
    names: list[str] = []
    append = work.append

    def recording(*args: Any) -> Any:
        names.append(threading.current_thread().name)
        return append(*args)

    monkeypatch.setattr(work, "append", recording)
    return names


def on_writer(name: str) -> bool:
    return name.startswith("epoch-sqlite-writer:")


def assert_write_lock_free(path: Path) -> None:
    """Another connection takes the file's write lock at once (it raises "database is locked" if held)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_lone_appends_run_on_the_callers_thread(tmp_path: Path, append_threads: list[str]) -> None:
    """All but every ``CHECKPOINT_EVERY``-th, which the writer thread commits (and checkpoints the WAL)."""
    here = threading.current_thread().name
    async with SQLiteEventStore(tmp_path / "lone.db") as store:
        for i in range(2 * CHECKPOINT_EVERY):
            await store.append("s-1", new(1), i - 1 if i else NO_STREAM)
        assert [e.version for e in await collect(store.read_stream("s-1"))] == list(range(2 * CHECKPOINT_EVERY))
    expected = ([here] * (CHECKPOINT_EVERY - 1) + ["writer"]) * 2
    assert ["writer" if on_writer(name) else name for name in append_threads] == expected


async def test_inline_writes_off_sends_every_append_to_the_writer(tmp_path: Path, append_threads: list[str]) -> None:
    async with SQLiteEventStore(tmp_path / "off.db", inline_writes=False) as store:
        for i in range(5):
            await store.append("s-1", new(1), i - 1 if i else NO_STREAM)
    assert len(append_threads) == 5
    assert all(on_writer(name) for name in append_threads)


@pytest.fixture
def group_sizes(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many groups of each size were committed (on any thread)."""
    sizes: Counter[int] = Counter()
    commit_group = writer._commit_group

    def counting(connection: sqlite3.Connection, jobs: list[writer.Job], *args: Any, **kwargs: Any) -> None:
        sizes[len(jobs)] += 1
        commit_group(connection, jobs, *args, **kwargs)

    monkeypatch.setattr(writer, "_commit_group", counting)
    return sizes


async def test_concurrent_appends_share_one_commit_on_the_callers_thread(
    tmp_path: Path, append_threads: list[str], group_sizes: Counter[int]
) -> None:
    """Tasks appending at once find the loop busy: their appends are held until the loop's turn ends, then
    committed together on the caller's thread, ``HERE_GROUP`` at a time, each at its own place."""
    here = threading.current_thread().name
    async with SQLiteEventStore(tmp_path / "many.db") as store:
        results = await asyncio.gather(*(store.append(f"s-{i}", new(1), NO_STREAM) for i in range(HERE_GROUP + 36)))
        assert [(r.stream, r.version, r.position) for r in results] == [
            (f"s-{i}", 0, i + 1) for i in range(HERE_GROUP + 36)
        ]
        assert await store.head_position() == HERE_GROUP + 36
    assert append_threads == [here] * (HERE_GROUP + 36)
    assert group_sizes == Counter({HERE_GROUP: 1, 36: 1})


async def test_a_failing_append_rolls_back_only_its_own_savepoint_here(
    tmp_path: Path, append_threads: list[str]
) -> None:
    """One append of a group on the caller's thread fails its guard: the group runs again, each append in
    a savepoint of its own; only that one is refused, the others share one commit at dense positions."""
    here = threading.current_thread().name
    async with SQLiteEventStore(tmp_path / "mixed.db") as store:
        await store.append("taken-1", new(1), NO_STREAM)
        connection = store._workers._writer
        assert connection is not None
        statements: list[str] = []
        connection.set_trace_callback(statements.append)
        mixed = await asyncio.gather(
            *(store.append("taken-1" if i == 20 else f"mixed-{i}", new(1), NO_STREAM) for i in range(40)),
            return_exceptions=True,
        )
        connection.set_trace_callback(None)
    refused = mixed[20]
    assert isinstance(refused, WrongExpectedVersion)
    assert str(refused) == "taken-1: expected version NO_STREAM, actual 0"
    assert [r.position for r in mixed if isinstance(r, AppendResult)] == list(range(2, 41))
    assert set(append_threads) == {here}
    assert statements.count("COMMIT") == 1
    assert statements.count("ROLLBACK") == 1  # the group's first run
    assert statements.count("ROLLBACK TO append") == 1  # then only the failing append's savepoint
    assert statements.count("SAVEPOINT append") == statements.count("RELEASE append") == 40


async def test_held_appends_are_committed_by_close(tmp_path: Path) -> None:
    """Appends held for the next group commit when the store is closed are committed, not refused."""
    path = tmp_path / "closing.db"
    store = SQLiteEventStore(path)
    await store.append("s-0", new(1), NO_STREAM)
    tasks = [asyncio.ensure_future(store.append(f"s-{i}", new(1), NO_STREAM)) for i in range(1, 6)]
    await asyncio.sleep(0)  # each is held, its group commit not yet run
    assert len(store._workers._held().pending) == 5
    await store.close()
    assert [(r.stream, r.position) for r in await asyncio.gather(*tasks)] == [(f"s-{i}", i + 1) for i in range(1, 6)]
    async with SQLiteEventStore(path) as reopened:
        assert [(e.stream, e.position) for e in await collect(reopened.read_all())] == [
            (f"s-{i}", i + 1) for i in range(6)
        ]


async def test_a_group_waits_on_the_writer_for_a_lock_held_elsewhere(tmp_path: Path, append_threads: list[str]) -> None:
    """Another connection holds the write lock: a held group is not committed on the loop's thread (it
    would wait there) but handed to the writer, which waits for the lock while the loop keeps running."""
    path = tmp_path / "held-group.db"
    async with SQLiteEventStore(path, timeout=10) as store:
        await store.append("s-0", new(1), NO_STREAM)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        def tick() -> None:
            ticks.append(time.monotonic())
            timer[0] = loop.call_later(0.005, tick)

        timer = [loop.call_later(0.005, tick)]
        loop.call_later(0.3, other.execute, "COMMIT")
        started = time.monotonic()
        results = await asyncio.gather(*(store.append(f"s-{i}", new(1), NO_STREAM) for i in range(1, 9)))
        waited = time.monotonic() - started
        timer[0].cancel()
        other.close()
        assert [(r.stream, r.position) for r in results] == [(f"s-{i}", i + 1) for i in range(1, 9)]
        assert waited >= 0.29
        assert len([t for t in ticks if started <= t <= started + waited]) >= 10
        assert all(on_writer(name) for name in append_threads[1:])
        assert len(append_threads) == 9


async def test_an_interrupted_group_leaves_no_lock_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A group interrupted on the caller's thread is rolled back whole and its appends cancelled: the
    write lock is free, nothing of the group is stored, and the store goes on. (The group runs in a
    callback of the loop, which reports what interrupted it: asyncio re-raises only KeyboardInterrupt
    and SystemExit from a callback.)"""
    path = tmp_path / "interrupted-group.db"
    append = work.append
    calls = 0

    def interrupted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        result = append(*args)
        if calls == 3:
            raise Interrupt
        return result

    async with SQLiteEventStore(path) as store:
        await store.append("s-0", new(1), NO_STREAM)
        monkeypatch.setattr(work, "append", interrupted)
        tasks = [asyncio.ensure_future(store.append(f"s-{i}", new(1), NO_STREAM)) for i in range(1, 6)]
        await asyncio.sleep(0.05)  # the group commit runs in this turn of the loop and is interrupted
        [report] = [r for r in caplog.records if r.exc_info is not None]
        assert report.exc_info is not None and report.exc_info[0] is Interrupt
        monkeypatch.setattr(work, "append", append)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
        assert_write_lock_free(path)
        assert [(e.stream, e.position) for e in await collect(store.read_all())] == [("s-0", 1)]
        result = await store.append("s-1", new(1), NO_STREAM)
        assert (result.version, result.position) == (0, 2)


async def test_a_lock_held_elsewhere_never_blocks_the_loop(tmp_path: Path, append_threads: list[str]) -> None:
    """Another connection (as another process would) holds the write lock: the lone append does not wait
    for it on the loop's thread (busy timeout 0 there) but on the writer's, while the loop keeps running."""
    path = tmp_path / "held.db"
    async with SQLiteEventStore(path, timeout=10) as store:
        await store.append("s-1", new(1), NO_STREAM)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks: list[float] = []
        loop = asyncio.get_running_loop()

        def tick() -> None:  # a timer chain, not a task: nothing of it is ready when the append starts
            ticks.append(time.monotonic())
            timer[0] = loop.call_later(0.005, tick)

        timer = [loop.call_later(0.005, tick)]
        loop.call_later(0.3, other.execute, "COMMIT")  # on the loop: proves it ran while the append waited
        started = time.monotonic()
        result = await store.append("s-1", new(1), 0)
        waited = time.monotonic() - started
        timer[0].cancel()
        other.close()
        assert (result.version, result.position) == (1, 2)
        assert waited >= 0.29
        during = [t for t in ticks if started <= t <= started + waited]
        assert len(during) >= 10
        assert on_writer(append_threads[-1])
        assert [e.version for e in await collect(store.read_stream("s-1"))] == [0, 1]


async def test_a_loop_of_inline_appends_polls_the_loops_sockets(tmp_path: Path, append_threads: list[str]) -> None:
    """Each inline append yields to the loop once, which polls its sockets: a reader with data waiting
    runs right after the first append, not after the whole loop of them."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    fired: list[int] = []

    def readable() -> None:
        fired.append(len(append_threads))
        left.recv(1)

    loop.add_reader(left, readable)
    try:
        async with SQLiteEventStore(tmp_path / "poll.db") as store:
            await store.append("s-0", new(1), NO_STREAM)
            right.send(b"x")
            for i in range(1, 20):
                await store.append(f"s-{i}", new(1), NO_STREAM)
    finally:
        loop.remove_reader(left)
        left.close()
        right.close()
    assert fired == [2]  # after the second append, while 18 more were still to come
    assert append_threads[1] == threading.current_thread().name  # and that append was an inline one


class Interrupt(BaseException):
    """What KeyboardInterrupt is to a store: not an Exception."""


async def test_an_interrupted_inline_append_leaves_no_lock_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append interrupted on the caller's thread is rolled back: the file's write lock is free for
    other connections, and the store goes on as if it had never been tried."""
    path = tmp_path / "interrupted.db"
    append = work.append

    def interrupted(*args: Any) -> Any:
        append(*args)  # its rows are written, not committed
        raise Interrupt

    async with SQLiteEventStore(path) as store:
        await store.append("s-1", new(1), NO_STREAM)
        monkeypatch.setattr(work, "append", interrupted)
        with pytest.raises(Interrupt):
            await store.append("s-1", new(2), 0)
        monkeypatch.setattr(work, "append", append)
        assert_write_lock_free(path)
        result = await store.append("s-1", new(1), 0)
        assert (result.version, result.position) == (1, 2)
        assert [(e.version, e.position) for e in await collect(store.read_stream("s-1"))] == [(0, 1), (1, 2)]


async def test_the_wal_is_still_checkpointed(tmp_path: Path) -> None:
    """Inline commits never checkpoint; the writer thread's share does, so the WAL stays bounded (about
    1,000 pages plus one round of inline commits; unchecked, 3,000 appends would write ~70 MB of it)."""
    path = tmp_path / "wal.db"
    async with SQLiteEventStore(path) as store:
        for i in range(3000):
            await store.append(f"s-{i % 100}", new(1))
        wal = os.path.getsize(f"{path}-wal")
    assert wal <= 6 * 2**20


async def test_appends_from_many_threads_and_loops(tmp_path: Path) -> None:
    """Callers on four threads (each with its loop) write inline through one writer's connection, one at
    a time: every append is stored once, in order per stream, at distinct positions."""
    async with SQLiteEventStore(tmp_path / "threads.db") as store:

        async def appends(name: str) -> None:
            for i in range(50):
                await store.append(name, new(1), i - 1 if i else NO_STREAM)

        def thread_main(name: str) -> Callable[[], None]:
            return lambda: asyncio.run(appends(name))

        threads = [threading.Thread(target=thread_main(f"t-{t}")) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        events = await collect(store.read_all())
        assert [e.position for e in events] == list(range(1, 201))
        for t in range(4):
            assert [e.version for e in events if e.stream == f"t-{t}"] == list(range(50))


async def test_inline_writes_option(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'flag.db'}?inline_writes=false")
    assert isinstance(store, SQLiteEventStore)
    assert store._workers.inline_writes is False
    await store.close()
    with pytest.raises(ConfigurationError) as bad_url:
        await open_store(f"sqlite:///{tmp_path / 'flag.db'}?inline_writes=maybe")
    assert str(bad_url.value) == "bad value for inline_writes in the store URL: 'maybe' (use true or false)"
    with pytest.raises(ConfigurationError) as bad_value:
        SQLiteEventStore(tmp_path / "flag.db", inline_writes="yes")  # type: ignore[arg-type]
    assert str(bad_value.value) == "inline_writes must be True or False, not 'yes'"


async def test_a_failed_commit_of_a_group_fails_every_append_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT of a group on the caller's thread fails: every append of the group hears the mapped
    error, nothing of it is stored, the write lock is free, and the store goes on."""
    path = tmp_path / "failed-commit.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-0", new(1), NO_STREAM)
        monkeypatch.setattr(writer, "COMMIT", "COMMIT junk")  # SQLite refuses the statement
        outcomes = await asyncio.gather(
            *(store.append(f"s-{i}", new(1), NO_STREAM) for i in range(1, 6)), return_exceptions=True
        )
        monkeypatch.setattr(writer, "COMMIT", "COMMIT")
        assert [type(o).__name__ for o in outcomes] == ["StoreUnavailable"] * 5
        assert [str(o) for o in outcomes] == [f's-{i}: SQLite failed: near "junk": syntax error' for i in range(1, 6)]
        assert_write_lock_free(path)
        assert [(e.stream, e.position) for e in await collect(store.read_all())] == [("s-0", 1)]
        results = await asyncio.gather(*(store.append(f"s-{i}", new(1), NO_STREAM) for i in range(1, 4)))
        assert [(r.stream, r.position) for r in results] == [("s-1", 2), ("s-2", 3), ("s-3", 4)]


def test_appends_left_held_by_a_closed_loop_do_not_block_the_next_loop(tmp_path: Path) -> None:
    """A loop stopped and closed before its group commit ran leaves appends held that nobody waits for:
    a later loop on the same thread appends as usual instead of waiting behind them forever."""
    store = SQLiteEventStore(tmp_path / "two-loops.db")

    left: list[asyncio.Future[Any]] = []

    async def leave_held() -> None:
        await store.append("s-0", new(1), NO_STREAM)
        for i in range(1, 4):  # they run after this coroutine ends; the loop stops before their group commit
            left.append(asyncio.ensure_future(store.append(f"s-{i}", new(1), NO_STREAM)))

    first = asyncio.new_event_loop()
    first.run_until_complete(leave_held())
    assert len(store._workers._held().pending) == 3
    assert not any(task.done() for task in left)
    first.close()

    async def go_on() -> list[tuple[str, int]]:
        results = await asyncio.wait_for(
            asyncio.gather(*(store.append(f"t-{i}", new(1), NO_STREAM) for i in range(2))), timeout=10
        )
        events = [(e.stream, e.position) for e in await collect(store.read_all())]
        await store.close()
        assert [(r.stream, r.position) for r in results] == [("t-0", 2), ("t-1", 3)]
        return events

    assert asyncio.run(go_on()) == [("s-0", 1), ("t-0", 2), ("t-1", 3)]
