"""Fault injection, kept as tests: SIGKILLed writers, PostgreSQL crashes and restarts, a full disk.

Real parts only: OS processes killed with SIGKILL, a PostgreSQL cluster of this module's own with fsync
on stopped with ``pg_ctl -m fast`` and ``-m immediate``, a size-limited tmpfs under a SQLite file.
The counts (kills, restarts) are printed and kept in ``.soak/``; ``make soak`` raises them
(``EPOCH_FAULT_KILLS``, ``EPOCH_FAULT_RESTARTS``).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from epoch import EventStore, NewEvent, StoreFull, StoreUnavailable, open_store
from epoch.stores.sqlite import SQLiteEventStore
from tests.faults import collect

# -- a full disk (SQLite) --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (needs root: CI runs as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    reason = ""
    if os.geteuid() != 0:
        reason = "mounting a size-limited tmpfs needs root"
    else:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
        if done.returncode != 0:
            reason = f"mount -t tmpfs failed: {done.stderr.decode().strip()}"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the full-disk test cannot run here: {reason}")
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk) or 0
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def payload(tag: str, size: int = 3000) -> bytes:
    return json.dumps({"tag": tag, "pad": "x" * size}).encode()


async def append_until_full(
    store: EventStore, stream: str, size: int, acked: list[tuple[str, int, bytes]]
) -> StoreFull:
    """Append batches of ``size`` events to ``stream`` (recording each acknowledged one) until StoreFull."""
    for i in range(10_000):  # SQLite may still find room in pages it already has
        batch = [NewEvent("Filled", payload(f"{stream}-{i}-{j}")) for j in range(size)]
        try:
            result = await store.append(stream, batch)
        except StoreFull as exc:
            return exc
        first = result.version - size + 1
        acked.extend((stream, first + j, event.data) for j, event in enumerate(batch))
    raise AssertionError(f"{stream}: 10000 appends and the store is still not full")


def full_message(stream: str) -> str:
    return (
        f"{stream}: the database or disk is full: nothing of this write was stored;"
        " free space (or raise max_page_count) and retry"
    )


async def test_a_full_disk_is_store_full_and_writes_resume(small_disk: Path) -> None:
    url = f"sqlite:///{small_disk / 'epoch.db'}"
    acked: list[tuple[str, int, bytes]] = []
    async with open_store(url) as store:
        for i in range(20):
            result = await store.append(f"disk-{i % 3}", [NewEvent("Filled", payload(f"a{i}"))])
            acked.append((result.stream, result.version, payload(f"a{i}")))
        filler = small_disk / "filler"
        fill(filler)
        error = await append_until_full(store, "disk-full", 10, acked)
        assert str(error) == full_message("disk-full")
        assert error.stream == "disk-full"
        assert isinstance(error, StoreUnavailable)  # callers that retry on StoreUnavailable still do
        assert isinstance(error.__cause__, sqlite3.OperationalError)
        # Still full: a small append fails the same way, and nothing of the failed appends is stored.
        with pytest.raises(StoreFull, match="disk-0: the database or disk is full"):
            await store.append("disk-0", [NewEvent("Tiny", b"{}")])
        stored = [(e.stream, e.version, e.data) for e in await collect(store.read_all())]
        assert stored == acked
        with sqlite3.connect(small_disk / "epoch.db") as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # Space frees: the store takes writes again, versions continue densely.
        filler.unlink()
        result = await store.append("disk-0", [NewEvent("AfterSpaceFreed", b"{}")], 6)
        assert (result.stream, result.version) == ("disk-0", 7)
        more = await store.append("disk-full", [NewEvent("AfterSpaceFreed", b"{}")])
        assert more.version == sum(1 for s, _, _ in acked if s == "disk-full")
    async with open_store(url) as store:
        events = await collect(store.read_all())
        assert [(e.stream, e.version, e.data) for e in events[: len(acked)]] == acked
        assert [(e.stream, e.type) for e in events[len(acked) :]] == [
            ("disk-0", "AfterSpaceFreed"),
            ("disk-full", "AfterSpaceFreed"),
        ]
    with sqlite3.connect(small_disk / "epoch.db") as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_max_page_count_is_store_full_and_writes_resume(tmp_path: Path) -> None:
    """SQLITE_FULL without a small file system: the writer's connection may grow the file by a few pages only."""
    path = tmp_path / "epoch.db"
    async with await SQLiteEventStore.from_url(f"sqlite:///{path}") as store:
        first = await store.append("pages-1", [NewEvent("Filled", payload("0"))])
        pages = await store.run_in_transaction(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run_in_transaction(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 8}").fetchall())
        acked = [(first.stream, first.version, payload("0"))]
        error = await append_until_full(store, "pages-1", 4, acked)
        assert str(error) == full_message("pages-1")
        assert len(acked) > 1  # the limit let a few batches in first
        assert [(e.stream, e.version, e.data) for e in await collect(store.read_all())] == acked
        await store.run_in_transaction(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchall())
        result = await store.append("pages-1", [NewEvent("AfterLimitRaised", b"{}")], acked[-1][1])
        assert (await store.stream_version("pages-1")) == acked[-1][1] + 1
        assert result.version == acked[-1][1] + 1
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
