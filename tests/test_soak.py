"""Soak tests: many events with bounded memory (SQLite), and a mixed load on PostgreSQL with a worker killed.

The short versions run in ``make test`` (100,000 events; about 20 s of mixed load). ``make soak`` runs the
long ones: ``EPOCH_SOAK_EVENTS=1000000`` and ``EPOCH_SOAK_SECONDS=600``. Figures (events, kills, peak
RSS, durations) are printed and kept in ``.soak/soak-*.json`` (the short versions: ``.soak/short/``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from epoch import Codec, EventEnvelope, ProjectionRunner, RecordedEvent, open_store
from epoch.testing import collect
from tests.faults import (
    ENV,
    ROOT,
    Worker,
    check_log,
    env_int,
    mib,
    peak_rss_kib,
    report,
    reset_peak_rss,
    rss_kib,
)

EVENTS = env_int("EPOCH_SOAK_EVENTS", 100_000)
SECONDS = env_int("EPOCH_SOAK_SECONDS", 20)

# -- (a) many events, bounded memory ---------------------------------------------------------------

SOAK_STREAMS = 1000
BATCH = 100
# Each phase streams the log (a page of 1,000 rows, a projection batch of 256, a copy chunk of 1,000):
# what it holds is a few MiB whatever the store's size. 48 MiB over the RSS at the phase's start leaves
# room for the allocator and caches, yet is far below what holding the log would take: 100,000 events
# as a list of RecordedEvents take 57 MiB (measured), 1,000,000 ten times that.
GROWTH_BOUND_MIB = 48


@dataclass(frozen=True)
class Ticked:
    n: int
    pad: str


codec: Codec[Ticked] = Codec([Ticked])
PAD = "x" * 120


class Tally:
    """A projection whose read model is bounded: per stream, the last version seen."""

    name = "soak-tally"

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.count = 0
        self.total = 0
        self.out_of_order = 0

    async def handle(self, envelope: EventEnvelope[Ticked]) -> None:
        if envelope.version != self.last.get(envelope.stream, -1) + 1:
            self.out_of_order += 1
        self.last[envelope.stream] = envelope.version
        self.count += 1
        self.total += envelope.data.n


class Phase:
    """Times a phase and measures its peak RSS above the RSS it started with."""

    def __init__(self, figures: dict[str, Any], name: str) -> None:
        self.figures = figures
        self.name = name

    def __enter__(self) -> Phase:
        reset_peak_rss()
        self.rss = rss_kib()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        peak = peak_rss_kib()
        seconds = time.monotonic() - self.started
        self.figures[self.name] = {
            "seconds": round(seconds, 1),
            "events_per_second": round(EVENTS / seconds) if seconds else None,
            "rss_before_mib": mib(self.rss),
            "peak_rss_mib": mib(peak),
            "growth_mib": mib(peak - self.rss),
        }


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over an exec from the forking process
# (here pytest, tens of MiB), while VmHWM belongs to the new process's own memory.
_CLI_WITH_PEAK = """
import sys
from epoch.cli import app
try:
    app(sys.argv[1:])
finally:
    peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
    print("peak_rss_kib", peak, file=sys.stderr)
"""


def copy_in_a_process(src: str, dst: str) -> tuple[dict[str, Any], int, float]:
    """``epoch copy SRC DST --json`` as an OS process: its report, its own peak RSS (KiB), its duration."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _CLI_WITH_PEAK, "copy", src, dst, "--json"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak = int(done.stderr.strip().splitlines()[-1].split()[1])
    return json.loads(done.stdout.strip().splitlines()[-1]), peak, time.monotonic() - started


async def compare_logs(src: AsyncIterator[RecordedEvent], dst: AsyncIterator[RecordedEvent]) -> int:
    """Walk two logs side by side (never both in memory): the same events, in the same order."""
    count = 0
    async for a in src:
        b = await anext(dst)
        assert (a.stream, a.version, a.id, a.type, a.data, a.metadata, a.recorded_at) == (
            b.stream,
            b.version,
            b.id,
            b.type,
            b.data,
            b.metadata,
            b.recorded_at,
        ), f"event {count}"
        count += 1
    assert await anext(dst, None) is None
    return count


async def append_soak(url: str) -> int:
    async with open_store(url) as store:
        n = 0
        for batch in range(EVENTS // BATCH):
            events = [codec.encode(Ticked(n + i, PAD)) for i in range(BATCH)]
            await store.append(f"soak-{batch % SOAK_STREAMS}", events)
            n += BATCH
        return await store.head_position()


@pytest.mark.slow
@pytest.mark.timeout(3600)
async def test_soak_many_events_with_bounded_memory(tmp_path: Path, pg_dsn: str, other_pg_dsn: str) -> None:
    assert EVENTS % BATCH == 0
    src = f"sqlite:///{tmp_path / 'soak.db'}"
    figures: dict[str, Any] = {"events": EVENTS, "streams": SOAK_STREAMS, "growth_bound_mib": GROWTH_BOUND_MIB}
    at_start = rss_kib()
    with Phase(figures, "append"):
        head = await append_soak(src)
    expected_total = EVENTS * (EVENTS - 1) // 2
    async with open_store(src) as store:
        with Phase(figures, "read_all"):
            count = total = 0
            last_position = 0
            last: dict[str, int] = {}
            async for event in store.read_all():
                assert event.position > last_position
                assert event.version == last.get(event.stream, -1) + 1, f"{event.stream} {event.version}"
                last_position, last[event.stream] = event.position, event.version
                count += 1
                total += json.loads(event.data)["n"]
            assert (count, total, last_position) == (EVENTS, expected_total, head)
        with Phase(figures, "projection"):
            tally = Tally()
            runner = ProjectionRunner(store, codec, [tally])
            await runner.run_until_idle()
            assert (tally.count, tally.total, tally.out_of_order) == (EVENTS, expected_total, 0)
            assert len(tally.last) == SOAK_STREAMS
            assert await runner.checkpoints.load("soak-tally") == head
    # epoch copy, as a user runs it: its own process, whose peak RSS we compare with the same command
    # copying a ten-event store into the same kind of store (what the interpreter, the CLI and the
    # drivers take on their own).
    tiny = f"sqlite:///{tmp_path / 'tiny.db'}"
    async with open_store(tiny) as store:
        await store.append("soak-1", [codec.encode(Ticked(i, PAD)) for i in range(10)])
    destinations = {
        "copy_to_sqlite": (f"sqlite:///{tmp_path / 'soak-copy.db'}", f"sqlite:///{tmp_path / 'tiny-copy.db'}"),
        "copy_to_postgres": (pg_dsn, other_pg_dsn),
    }
    for phase, (dst, tiny_dst) in destinations.items():
        _, baseline, _ = await asyncio.to_thread(copy_in_a_process, tiny, tiny_dst)
        result, peak, seconds = await asyncio.to_thread(copy_in_a_process, src, dst)
        assert (result["copied"], result["resumed"], result["timestamps_preserved"]) == (EVENTS, False, True)
        figures[phase] = {
            "seconds": round(seconds, 1),
            "events_per_second": round(EVENTS / seconds),
            "process_peak_rss_mib": mib(peak),
            "same_command_on_10_events_peak_rss_mib": mib(baseline),
            "growth_mib": mib(peak - baseline),
        }
        async with open_store(src) as a, open_store(dst) as b:
            with Phase(figures, f"{phase}_compare"):
                assert await compare_logs(a.read_all(), b.read_all()) == EVENTS
    # A phase may reuse memory an earlier one freed, so also bound this process's peak over the whole
    # test against its RSS before the first event.
    peaks = [f["peak_rss_mib"] for f in figures.values() if isinstance(f, dict) and "peak_rss_mib" in f]
    figures["test_process"] = {"rss_at_start_mib": mib(at_start), "peak_rss_mib": max(peaks)}
    figures["test_process"]["growth_mib"] = round(max(peaks) - mib(at_start), 1)
    report("soak-events", figures)
    for phase in ("append", "read_all", "projection", "copy_to_sqlite", "copy_to_postgres", "test_process"):
        assert figures[phase]["growth_mib"] < GROWTH_BOUND_MIB, (phase, figures[phase])


# -- (b) a mixed load on PostgreSQL ----------------------------------------------------------------

HOT_STREAMS = 6
COMMAND_WORKERS = 3
PROJECTION_WORKERS = 2
PARTITIONS = 4


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(SECONDS * 3 + 300)
async def test_soak_mixed_load_on_postgres(pg_dsn: str) -> None:
    """Commands on shared hot streams from several processes, live subscriptions, and a partitioned
    projection one of whose workers is SIGKILLed and restarted (every minute in the long version)."""
    from tests.test_commands import Open, handler_for

    url = pg_dsn + "?pool_max=6"
    async with open_store(url) as store:
        setup = handler_for(store)
        for stream in range(HOT_STREAMS):
            await setup.execute(stream, Open(f"owner{stream}"))
    started = time.monotonic()
    projectors = [await Worker.start("partitioned", url, str(PARTITIONS), name=f"projector {n}") for n in range(2)]
    everything: list[RecordedEvent] = []
    accounts: list[RecordedEvent] = []

    async def consume(into: list[RecordedEvent], categories: str | None) -> None:
        async with open_store(url) as reader:
            async for event in reader.subscribe(categories=categories):
                into.append(event)

    consumers = [asyncio.ensure_future(consume(everything, None)), asyncio.ensure_future(consume(accounts, "account"))]
    commanders: list[Worker] = []
    killed: list[int] = []
    try:
        for projector in projectors:
            await projector.wait_for_lines(1)
        commanders = [
            await Worker.start("commands", url, str(n), str(SECONDS), str(HOT_STREAMS), name=f"commands {n}")
            for n in range(COMMAND_WORKERS)
        ]
        load_started = time.monotonic()
        kills = max(1, SECONDS // 60)
        for kill in range(kills):  # spread over the run, between its first tenth and its last fifth
            at = SECONDS * (0.1 + 0.7 * (kill + 1) / (kills + 1))
            await asyncio.sleep(max(0.0, load_started + at - time.monotonic()))
            victim = projectors[kill % len(projectors)]
            assert victim.process.returncode is None, "a projector died on its own"
            killed.append(victim.process.pid)
            await victim.kill()
            projectors[kill % len(projectors)] = await Worker.start("partitioned", url, str(PARTITIONS))
        for commander in commanders:
            await commander.finish(timeout=SECONDS + 120)
        async with open_store(url) as store:
            stored = await collect(store.read_all())
            streams = {s: [e.version for e in await collect(store.read_stream(s))] for s in {e.stream for e in stored}}
            reader = handler_for(store, cache=None)
            balances = {f"account-{s}": (await reader.load(s)).state.balance for s in range(HOT_STREAMS)}
        waited = time.monotonic()
        while len(everything) < len(stored) or len(accounts) < len(stored):
            assert time.monotonic() - waited < 60, f"subscribers at {len(everything)}, {len(accounts)} of {len(stored)}"
            assert all(not c.done() for c in consumers), "a subscriber stopped"
            await asyncio.sleep(0.05)
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            while True:
                row = await (await conn.execute("SELECT count(*) FROM soak_handled")).fetchone()
                if row is not None and row[0] >= len(stored):
                    break
                assert time.monotonic() - waited < 120, f"the projection handled {row} of {len(stored)}"
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a duplicate would show up now
    finally:
        for worker in [*commanders, *projectors]:
            await worker.stop()
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    seconds = time.monotonic() - started

    done: dict[str, str] = {}
    attempts = 0
    for commander in commanders:
        *oks, last_line = commander.lines
        assert last_line == f"done {len(oks)}"
        for line in oks:
            _, command_id, command_stream, _, tries = line.split()
            done[command_id] = command_stream
            attempts += int(tries)
    deposits = {json.loads(e.metadata)["$command_id"]: e.stream for e in stored if e.type == "Deposited"}
    handled = await asyncio.to_thread(_reread_handled, pg_dsn)  # after the pause: duplicates included
    keys = [(e.stream, e.version) for e in stored]
    projected = [(s, v) for s, v, _, _ in handled]
    figures = {
        "seconds_of_load": SECONDS,
        "seconds": round(seconds, 1),
        "command_processes": COMMAND_WORKERS,
        "hot_streams": HOT_STREAMS,
        "commands_acknowledged": len(done),
        "commands_per_second": round(len(done) / SECONDS),
        "conflicts_retried": attempts - len(done),
        "events_stored": len(stored),
        "subscriptions": len(consumers),
        "events_delivered_by_subscriptions": len(everything) + len(accounts),
        "projection_processes": PROJECTION_WORKERS,
        "partitions": PARTITIONS,
        "projector_sigkills_and_restarts": len(killed),
        "events_handled_by_projection": len(handled),
        "commands_lost": len(done.keys() - deposits.keys()),
        "deposits_not_acknowledged": len(deposits.keys() - done.keys()),
        "projection_lost": len(set(keys) - set(projected)),
        "projection_duplicated": len(projected) - len(set(projected)),
        "projection_reordered": sum(
            1
            for (s1, v1), (s2, v2) in itertools.pairwise(sorted(projected, key=lambda k: k[0]))
            if s1 == s2 and v2 <= v1
        ),
    }
    report("soak-mixed-postgres", figures)

    # The log: every event once, in order, each stream dense.
    check_log(stored, streams)
    # Every command acknowledged is stored exactly once and nothing else was (no lost update: a
    # balance is the number of deposits made on its stream).
    assert len([e for e in stored if e.type == "Deposited"]) == len(deposits)  # each command id once
    assert deposits == done
    assert balances == {f"account-{s}": list(done.values()).count(f"account-{s}") for s in range(HOT_STREAMS)}
    # Both subscriptions delivered the store's log exactly, through the whole run.
    assert [(e.position, e.id) for e in everything] == [(e.position, e.id) for e in stored]
    assert [(e.position, e.id) for e in accounts] == [(e.position, e.id) for e in stored]
    # The partitioned projection: each event exactly once despite the kills, each stream in order,
    # the killed worker had done work.
    assert sorted(projected) == sorted(keys)
    last: dict[str, int] = {}
    for name, version in projected:
        assert version == last.get(name, -1) + 1, f"the projection saw {name} {version} after {last.get(name)}"
        last[name] = version
    by_position = {e.position: (e.stream, e.version) for e in stored}
    assert all(by_position[int(p)] == (s, v) for s, v, p, _ in handled)
    assert set(killed) & {pid for *_, pid in handled}, "the killed projector had handled nothing"
    assert figures["conflicts_retried"] > 0, "no two commands ever raced on a hot stream"


def _reread_handled(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT stream, version, position, pid FROM soak_handled ORDER BY seq").fetchall()
