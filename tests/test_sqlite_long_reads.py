"""Long reads on the caller's thread (``stores/sqlite/threads.py``, ``Workers.scan``): every page of a read
runs on the thread that iterates it, the first (``INLINE_ROWS``) on the writer's connection when it is free,
the later ones (``PAGE_SIZE``) on that thread's own connection, with one turn of the event loop between
pages; a reader thread only when reading here would wait for a lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from epoch.stores.sqlite import SQLiteEventStore, work
from epoch.stores.sqlite.threads import INLINE_ROWS, PAGE_SIZE
from epoch.testing import collect
from epoch.testing import new_events as new


@pytest.fixture
def pages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, sqlite3.Connection]]:
    """Each stream page read: the thread it ran on, the rows it returned, the connection it used."""
    seen: list[tuple[str, int, sqlite3.Connection]] = []
    page = work.stream_page

    def recording(connection: sqlite3.Connection, cursor: Any, n: int) -> Any:
        result = page(connection, cursor, n)
        seen.append((threading.current_thread().name, len(result[1]), connection))
        return result

    monkeypatch.setattr(work, "stream_page", recording)
    return seen


async def fill_stream(store: SQLiteEventStore, stream: str, count: int) -> None:
    """``count`` events in ``stream``, appended 500 at a time."""
    for first in range(0, count, 500):
        await store.append(stream, new(min(500, count - first)))


async def test_every_page_of_a_long_read_runs_on_the_callers_thread(
    tmp_path: Path, pages: list[tuple[str, int, sqlite3.Connection]]
) -> None:
    async with SQLiteEventStore(tmp_path / "long.db") as store:
        await fill_stream(store, "s-1", 2 * PAGE_SIZE + 250)
        versions = [e.version for e in await collect(store.read_stream("s-1"))]
        writer = store._workers._writer
    assert versions == list(range(2 * PAGE_SIZE + 250))
    here = threading.current_thread().name
    assert [(name, rows) for name, rows, _ in pages] == [
        (here, INLINE_ROWS),
        (here, PAGE_SIZE),
        (here, PAGE_SIZE),
        (here, 250 - INLINE_ROWS),
    ]
    assert pages[0][2] is writer  # the first page: the writer's connection, free and warm
    assert all(connection is not writer for _, _, connection in pages[1:])  # the rest: this thread's own


async def test_the_loop_runs_between_the_pages_of_a_long_read(
    tmp_path: Path, pages: list[tuple[str, int, sqlite3.Connection]]
) -> None:
    """Another task gets the loop after each page: it is blocked for one page at a time, not the read."""
    ticks: list[int] = []  # how many pages had been read at each tick of the other task
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(len(pages))
            await asyncio.sleep(0)

    async with SQLiteEventStore(tmp_path / "turns.db") as store:
        await fill_stream(store, "s-1", 4 * PAGE_SIZE)
        pages.clear()
        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        count = 0
        async for _ in store.read_stream("s-1"):  # consumes without awaiting anything of its own
            count += 1
        stop.set()
        await other
    assert count == 4 * PAGE_SIZE
    assert len(pages) == 5  # 100, then 1,000 x 3, then 900
    # 0: before the read; 1-4: between every two pages (the read ends right after the fifth)
    assert sorted(set(ticks)) == [0, 1, 2, 3, 4]


async def test_a_long_read_keeps_the_bounds_its_first_page_fixed(
    tmp_path: Path, pages: list[tuple[str, int, sqlite3.Connection]]
) -> None:
    """Events appended between two pages of a read are not in it (the first page fixes its bounds)."""
    async with SQLiteEventStore(tmp_path / "bounds.db") as store:
        await fill_stream(store, "s-1", PAGE_SIZE + 50)
        read = store.read_stream("s-1")
        first = [await anext(read) for _ in range(INLINE_ROWS)]
        await store.append("s-1", new(3))
        rest = [e async for e in read]
    assert [e.version for e in first + rest] == list(range(PAGE_SIZE + 50))
