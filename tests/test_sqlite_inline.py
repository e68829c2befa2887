"""Appends on the caller's thread (``stores/sqlite/here.py``): a lone append skips the writer thread's two
hand-offs; concurrent ones still share the writer's group commit; the loop is never blocked by a lock
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
from epoch.errors import ConfigurationError
from epoch.records import NO_STREAM
from epoch.stores.sqlite import SQLiteEventStore, work, writer
from epoch.stores.sqlite.here import CHECKPOINT_EVERY
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


async def test_concurrent_appends_share_the_writers_group_commit(
    tmp_path: Path, append_threads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks appending at once find the loop busy: their appends go to the writer, committed in groups."""
    sizes: Counter[int] = Counter()
    commit_group = writer._commit_group

    def counting(connection: sqlite3.Connection, jobs: list[writer.Job], *args: Any, **kwargs: Any) -> None:
        sizes[len(jobs)] += 1
        commit_group(connection, jobs, *args, **kwargs)

    monkeypatch.setattr(writer, "_commit_group", counting)
    async with SQLiteEventStore(tmp_path / "many.db") as store:
        await asyncio.gather(*(store.append(f"s-{i}", new(1), NO_STREAM) for i in range(64)))
        assert await store.head_position() == 64
    assert len(append_threads) == 64
    assert all(on_writer(name) for name in append_threads)
    assert sum(size * n for size, n in sizes.items()) == 64
    assert max(sizes) > 1  # at least one commit shared by several appends


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
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the lock were still held
        other.execute("ROLLBACK")
        other.close()
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
