"""Fault injection, kept as tests: SIGKILLed writers, PostgreSQL crashes and restarts, a full disk.

Real parts only: OS processes killed with SIGKILL, a PostgreSQL cluster of this module's own with fsync
on stopped with ``pg_ctl -m fast`` and ``-m immediate``, a size-limited tmpfs under a SQLite file.
The counts (kills, restarts) are printed and kept in ``.soak/short/``; ``make soak`` raises them
(``EPOCH_FAULT_KILLS``, ``EPOCH_FAULT_RESTARTS``).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from uuid import UUID

import pytest

from epoch import NO_STREAM, EventStore, NewEvent, RecordedEvent, StoreFull, StoreUnavailable, open_store
from epoch.stores.sqlite import SQLiteEventStore
from epoch.testing import collect
from tests.conftest import create_database, drop_database
from tests.faults import PgCluster, Worker, check_log, counted, env_int, report

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
        assert result.version is not None  # a batch of size >= 1 was written
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
            assert result.version is not None
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
        assert first.version == 0
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


# -- SIGKILLed writers (SQLite, PostgreSQL) --------------------------------------------------------

KILLS = env_int("EPOCH_FAULT_KILLS", 24)
WRITERS = 3


def parse_acks(workers: Iterable[Worker]) -> dict[tuple[int, int, int], tuple[str, int]]:
    """(generation, worker, batch) -> (stream, last version) of every batch a worker acknowledged."""
    acked = {}
    for worker in workers:
        for line in list(worker.lines):
            if not line.startswith("ack ") or len(line.split()) != 6:  # a "try", or cut short by the kill
                continue
            _, generation, number, batch, stream, version = line.split()
            acked[int(generation), int(number), int(batch)] = (stream, int(version))
    return acked


def check_batches(
    events: list[RecordedEvent], acked: dict[tuple[int, int, int], tuple[str, int]]
) -> dict[tuple[int, int, int], list[RecordedEvent]]:
    """Every batch in the log is whole, in one stream at consecutive versions; every acknowledged one is there."""
    check_log(events)
    batches: dict[tuple[int, int, int], list[RecordedEvent]] = {}
    for event in events:
        part = json.loads(event.data)
        if event.type == "Part":
            batches.setdefault((part["g"], part["w"], part["b"]), []).append(event)
    for key, parts in batches.items():
        size = json.loads(parts[0].data)["n"]
        assert [json.loads(e.data)["i"] for e in parts] == list(range(size)), f"batch {key} is not whole"
        assert {e.stream for e in parts} == {parts[0].stream}, f"batch {key} spans streams"
        first = parts[0].version
        assert [e.version for e in parts] == list(range(first, first + size)), f"batch {key}: versions"
    for key, (stream, version) in acked.items():
        assert key in batches, f"acknowledged batch {key} ({stream} version {version}) is lost"
        assert (batches[key][-1].stream, batches[key][-1].version) == (stream, version), f"batch {key} moved"
    # A worker appends its batches one after another: what is stored of one generation has no gap, and
    # beyond what it acknowledged holds at most the batch it was killed between commit and reply.
    generations: dict[tuple[int, int], list[int]] = {}
    for generation, worker, batch in batches:
        generations.setdefault((generation, worker), []).append(batch)
    for (generation, worker), numbers in generations.items():
        assert sorted(numbers) == list(range(len(numbers))), f"generation {generation} of worker {worker}: a gap"
    return batches


class GrowingLog:
    """The log as read so far, checked as it grows: each :meth:`check` reads only the new events, so a
    long run (``make soak``: 200 kills) checks after every kill without re-reading everything."""

    def __init__(self) -> None:
        self.after = 0
        self.count = 0
        self.ids: set[UUID] = set()
        self.versions: dict[str, int] = {}
        self.batches: dict[tuple[int, int, int], list[tuple[str, int, int, int]]] = {}  # stream, version, i, n
        self.numbers: dict[tuple[int, int], set[int]] = {}

    async def check(self, store: EventStore, acked: dict[tuple[int, int, int], tuple[str, int]]) -> None:
        touched = set()
        async for event in store.read_all(after=self.after):
            assert event.position > self.after, f"position {event.position} after {self.after}"
            assert event.id not in self.ids, f"{event.stream} {event.version} delivered twice"
            expected = self.versions.get(event.stream, -1) + 1
            assert event.version == expected, f"{event.stream}: version {event.version}, expected {expected}"
            self.after, self.versions[event.stream] = event.position, event.version
            self.ids.add(event.id)
            self.count += 1
            if event.type == "Part":
                part = json.loads(event.data)
                key = (part["g"], part["w"], part["b"])
                self.batches.setdefault(key, []).append((event.stream, event.version, part["i"], part["n"]))
                self.numbers.setdefault(key[:2], set()).add(key[2])
                touched.add(key)
        for key in touched:  # a read sees a batch whole or not at all
            parts = self.batches[key]
            stream, first, _, size = parts[0]
            assert [p[2] for p in parts] == list(range(size)), f"batch {key} is not whole"
            assert [(p[0], p[1]) for p in parts] == [(stream, first + i) for i in range(size)], f"batch {key}"
        for key, (stream, version) in acked.items():
            assert key in self.batches, f"acknowledged batch {key} ({stream} version {version}) is lost"
            assert self.batches[key][-1][:2] == (stream, version), f"batch {key} moved"
        for generation, worker, _ in touched:
            numbers = self.numbers[generation, worker]
            assert numbers == set(range(len(numbers))), f"generation {generation} of worker {worker}: a gap"


async def sigkill_writers(url: str, name: str, integrity: Path | None = None) -> None:
    rng = random.Random(8)
    kills = probes = inside = 0
    generation = 0
    all_workers: list[Worker] = []

    async def start(number: int) -> Worker:
        nonlocal generation
        generation += 1
        worker = await Worker.start("batches", url, str(generation), str(number), name=f"writer {number}")
        all_workers.append(worker)
        return worker

    started = time.monotonic()
    growing = GrowingLog()
    async with open_store(url) as store:
        await store.append("probe-1", [NewEvent("Probe", b"{}")], NO_STREAM)  # creates the schema once
        running = [await start(number) for number in range(WRITERS)]
        try:
            while kills < KILLS:
                number = rng.randrange(WRITERS)
                victim = running[number]
                # Let it commit a few batches, then kill it: half the time as it begins an append, else
                # at a random moment (inside an append, between commit and reply, between appends).
                await victim.wait_for_lines(len(victim.lines) + rng.randint(2, 8))
                if rng.random() < 0.5:  # aim inside an append: right after it said "try"
                    deadline = time.monotonic() + 5
                    while not victim.lines[-1].startswith("try ") and time.monotonic() < deadline:
                        await asyncio.sleep(0.0005)
                else:
                    await asyncio.sleep(rng.uniform(0, 0.03))
                await victim.kill()
                kills += 1
                if victim.lines[-1].startswith("try "):  # it had begun an append and not yet replied
                    inside += 1
                acked = parse_acks(all_workers)  # before the read: every one of them must be in it
                await growing.check(store, acked)
                # The store keeps accepting writes, guarded ones too.
                version = await store.stream_version("probe-1")
                assert version is not None  # written before the first kill
                assert (await store.append("probe-1", [NewEvent("Probe", b"{}")], version)).version == version + 1
                probes += 1
                running[number] = await start(number)
        finally:
            for worker in running:
                await worker.stop()
        acked = parse_acks(all_workers)
        events = await collect(store.read_all())
        streams = {s: [e.version for e in await collect(store.read_stream(s))] for s in {e.stream for e in events}}
        check_log(events, streams)
        batches = check_batches(events, acked)
    if integrity is not None:
        with sqlite3.connect(integrity) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert kills == KILLS
    report(
        f"faults-sigkill-{name}",
        {
            "store": name,
            "sigkills": kills,
            "sigkills_inside_an_append": inside,
            "writer_processes_started": len(all_workers),
            "batches_acknowledged": len(acked),
            "batches_stored": len(batches),
            "batches_committed_but_not_acknowledged": len(batches) - len(acked),
            "events_stored": len(events),
            "guarded_probe_appends_after_a_kill": probes,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


@pytest.mark.slow
@pytest.mark.timeout(max(300, KILLS * 4))
async def test_sigkilled_writers_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "kills.db"
    await sigkill_writers(f"sqlite:///{path}", "sqlite", integrity=path)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(max(300, KILLS * 4))
async def test_sigkilled_writers_postgres(pg_dsn: str) -> None:
    # The checks read the log after each kill: an acknowledged batch is visible to read_all once every
    # transaction older than it has ended, which the read waits for up to visibility_timeout (1 s by
    # default; on a loaded machine a surviving writer's append can stay open longer than that).
    await sigkill_writers(pg_dsn + "?pool_max=4&visibility_timeout=30", "postgres")


# -- PostgreSQL stopped and restarted (fsync on) under writers and live subscribers ----------------

RESTARTS = env_int("EPOCH_FAULT_RESTARTS", 4)


@pytest.fixture(scope="module")
def durable_pg() -> Iterator[PgCluster]:
    """A cluster of this module's own with fsync, synchronous_commit and full_page_writes on."""
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
async def test_postgres_restarts_under_writers_and_subscribers(durable_pg: PgCluster) -> None:
    assert [durable_pg.setting(s) for s in ("fsync", "synchronous_commit", "full_page_writes")] == ["on"] * 3
    dsn = create_database(durable_pg.dsn)
    # Writers give up quickly (they must see StoreUnavailable while the server is down, then retry the
    # same batch: its event ids make the retry idempotent); subscribers retry on their own, forever.
    writer_url = dsn + "?reconnect_timeout=0.5&pool_timeout=2&pool_max=2"
    reader_url = dsn + "?pool_timeout=5&poll_interval=0.2"
    writers, per_writer_streams = 4, 3
    acked: list[tuple[str, int, list[int], list[UUID]]] = []  # stream, last version, positions, ids
    unavailable = [0] * writers
    stop = asyncio.Event()

    async def write(number: int) -> None:
        rng = random.Random(number)
        versions: dict[str, int] = {}
        async with open_store(writer_url) as store:
            i = 0
            while not stop.is_set():
                stream = f"rw{number}-{i % per_writer_streams}"
                size = rng.randint(1, 10)
                events = [NewEvent("Written", json.dumps({"w": number, "i": i, "j": j}).encode()) for j in range(size)]
                guard = versions.get(stream, NO_STREAM)
                while True:
                    try:
                        result = await store.append(stream, events, guard)
                        break
                    except StoreUnavailable:
                        unavailable[number] += 1
                        await asyncio.sleep(0.1)
                assert result.version is not None
                acked.append((stream, result.version, list(result.positions), [e.id for e in events]))
                versions[stream] = result.version
                i += 1
                await asyncio.sleep(0.005)

    everything: list[RecordedEvent] = []
    filtered: list[RecordedEvent] = []

    async def consume(into: list[RecordedEvent], categories: list[str] | None) -> None:
        async with open_store(reader_url) as store:
            async for event in store.subscribe(categories=categories):
                into.append(event)

    async with open_store(dsn) as setup:  # the schema, before anyone races for it
        await setup.head_position()
    consumers = [
        asyncio.ensure_future(consume(everything, None)),
        asyncio.ensure_future(consume(filtered, ["rw1", "rw2"])),
    ]
    tasks = [asyncio.ensure_future(write(n)) for n in range(writers)]
    started = time.monotonic()
    modes: list[str] = []
    downtime = 0.0
    try:
        for restart in range(RESTARTS):
            await asyncio.sleep(1.0)
            mode = ("fast", "immediate")[restart % 2]
            before = len(acked)
            assert before > 0 and all(not t.done() for t in tasks), "the writers stopped"
            down = time.monotonic()
            await asyncio.to_thread(durable_pg.stop, mode)
            seen_down = sum(unavailable)
            await asyncio.sleep(1.5)
            assert sum(unavailable) > seen_down, "no writer noticed the server was down"
            await asyncio.to_thread(durable_pg.start)
            downtime += time.monotonic() - down
            modes.append(mode)
            recovered = time.monotonic()
            while len(acked) < before + 4 * writers:  # every writer carries on after the restart
                assert time.monotonic() - recovered < 30, f"the writers did not recover within 30 s ({mode})"
                assert all(not t.done() for t in tasks), "a writer stopped"
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        async with open_store(dsn) as store:
            stored = await collect(store.read_all())
            streams = {s: [e.version for e in await collect(store.read_stream(s))] for s in {e.stream for e in stored}}
        expected_filtered = [e for e in stored if e.stream.split("-")[0] in ("rw1", "rw2")]
        waited = time.monotonic()
        while len(everything) < len(stored) or len(filtered) < len(expected_filtered):
            assert time.monotonic() - waited < 30, f"subscribers at {len(everything)}, {len(filtered)} of {len(stored)}"
            assert all(not c.done() for c in consumers), "a subscriber stopped"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would show up now
    finally:
        stop.set()
        for task in [*tasks, *consumers]:
            task.cancel()
        await asyncio.gather(*tasks, *consumers, return_exceptions=True)
    check_log(stored, streams)
    # Nothing acknowledged is lost, nothing is written twice (a retried batch is a no-op), and the
    # positions acknowledged are the ones stored.
    at = {(e.stream, e.version): e for e in stored}
    for stream, last, positions, ids in acked:
        first = last - len(ids) + 1
        assert [at[stream, v].id for v in range(first, last + 1)] == ids, f"{stream} {first}..{last} lost"
        assert [at[stream, v].position for v in range(first, last + 1)] == positions
    assert len(stored) == sum(len(ids) for *_, ids in acked)
    # Subscribers delivered every committed event exactly once, in order, through every restart.
    assert [(e.position, e.id) for e in everything] == [(e.position, e.id) for e in stored]
    assert [(e.position, e.id) for e in filtered] == [(e.position, e.id) for e in expected_filtered]
    log = Path(durable_pg.root, "server.log").read_text()
    recoveries = log.count("database system was not properly shut down; automatic recovery in progress")
    assert recoveries == modes.count("immediate")
    drop_database(durable_pg.dsn, dsn)
    report(
        "faults-postgres-restarts",
        {
            "restarts": len(modes),
            "stop_modes": counted(modes),
            "crash_recoveries_in_server_log": recoveries,
            "server_settings": "fsync=on synchronous_commit=on full_page_writes=on",
            "writers": writers,
            "subscribers": len(consumers),
            "batches_acknowledged": len(acked),
            "events_stored": len(stored),
            "store_unavailable_seen_by_writers": sum(unavailable),
            "events_delivered_by_subscribers": len(everything) + len(filtered),
            "seconds_server_down": round(downtime, 1),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
