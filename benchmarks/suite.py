"""The workloads (names fixed by issue 5) and the loop that runs every side of each, interleaved.

Each round runs epoch, eventsourcing and the raw driver one after the other (A B C A B C ...), each on a
fresh store; a result is the median of the rounds with min and max.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.backends import Backend
from benchmarks.harness import Result, Sizes, load_average, machine_info, round_ratios, summarise

Progress = Callable[[str], None]

WORKLOADS = (
    "commands",
    "commands_cached",
    "batch_append",
    "rehydrate_10k",
    "rehydrate_100k",
    "read_all",
    "subscribe_catchup",
    "concurrent_writers",
    "commands_concurrent",
    "hot_stream",
    "dcb_claims",
    "dcb_long",
    "read_all_1m_rss",
    "scaling",
)


def make_sides(backend: Backend, impls: tuple[str, ...]) -> list[Any]:
    if os.environ.get("EPOCH_BENCH_OTEL") == "1" and "epoch" in impls:
        # The three OpenTelemetry cases side by side: not importable, the API without an SDK (plain
        # epoch), an SDK recording.
        extra = tuple(impl for impl in ("epoch-no-otel", "epoch-otel") if impl not in impls)
        at = impls.index("epoch") + 1
        impls = (*impls[:at], *extra, *impls[at:])
    sides: list[Any] = []
    for impl in impls:
        if impl == "epoch":
            from benchmarks.epoch_side import EpochSide

            sides.append(EpochSide(backend))
        elif impl == "epoch-otel":
            from benchmarks.otel_side import EpochOtelSide

            sides.append(EpochOtelSide(backend))
        elif impl == "epoch-no-otel":
            from benchmarks.otel_blocked import EpochNoOtelSide

            sides.append(EpochNoOtelSide(backend))
        elif impl == "eventsourcing":
            from benchmarks.es_side import EventsourcingSide

            sides.append(EventsourcingSide(backend))
        elif impl == "raw":
            if backend.name == "memory":
                from benchmarks.raw_memory import RawMemorySide

                sides.append(RawMemorySide(backend))
            elif backend.name == "sqlite":
                from benchmarks.raw_sqlite import RawSQLiteSide

                sides.append(RawSQLiteSide(backend))
            else:
                from benchmarks.raw_postgres import RawPostgresSide

                sides.append(RawPostgresSide(backend))
    return sides


async def _interleaved(
    backend: Backend,
    sides: list[Any],
    rounds: int,
    workload: str,
    variant: str | None,
    call: Callable[[Any, str], Awaitable[float | tuple[float, int]]],
    work: int,
    per_second: bool,
    progress: Progress,
) -> list[Result]:
    """``call(side, location)`` returns seconds for ``work`` units (or seconds and failed commands); the
    value is units/s, or ms per unit."""
    samples: dict[str, list[float]] = {side.impl: [] for side in sides}
    failures: dict[str, list[int]] = {side.impl: [] for side in sides}
    load_before = load_average()
    for round_ in range(rounds):
        for side in sides:
            location = backend.fresh(side.impl.replace("eventsourcing", "es"))
            try:
                gc.collect()
                measured = await call(side, location)
            finally:
                backend.drop(location)
            seconds, failed = measured if isinstance(measured, tuple) else (measured, 0)
            value = work / seconds if per_second else seconds * 1000 / work
            samples[side.impl].append(value)
            failures[side.impl].append(failed)
            label = workload + (f"[{variant}]" if variant else "")
            lost = f" ({failed} failed)" if failed else ""
            progress(f"{backend.name:8} {label:32} {side.impl:13} round {round_ + 1}/{rounds}: {value:,.1f}{lost}")
    load = (load_before, load_average())
    unit = _UNITS[workload] if per_second else "ms"
    results = [
        summarise(workload, backend.name, impl, values, unit, per_second, variant, work, failures[impl])
        for impl, values in samples.items()
    ]
    for result in results:
        result.load = load
    return results


_UNITS = {
    "commands": "commands/s",
    "commands_cached": "commands/s",
    "batch_append": "events/s",
    "read_all": "events/s",
    "subscribe_catchup": "events/s",
    "concurrent_writers": "commands/s",
    "commands_concurrent": "commands/s",
    "hot_stream": "commands/s",
    "dcb_claims": "claims/s",
    "dcb_long": "decisions/s",
}


async def run_store(
    backend: Backend,
    sizes: Sizes,
    workloads: tuple[str, ...],
    impls: tuple[str, ...],
    progress: Progress,
    notes: list[str] | None = None,
    machine: dict[str, Any] | None = None,
) -> list[Result]:
    sides = make_sides(backend, impls)
    z = sizes
    results: list[Result] = []

    async def go(
        workload: str,
        variant: str | None,
        call: Any,
        work: int,
        per_second: bool = True,
        needs: str | None = None,
        where: Callable[[Any], bool] = lambda side: True,
    ) -> None:
        # ``needs``: the side method the workload calls; sides without it (e.g. no raw variant) sit it out;
        # ``where``: whether a side that has it runs on this store
        chosen = [side for side in sides if (needs is None or hasattr(side, needs)) and where(side)]
        results.extend(
            await _interleaved(backend, chosen, z.rounds, workload, variant, call, work, per_second, progress)
        )

    if "commands" in workloads:
        await go("commands", None, lambda s, loc: s.commands(loc, z.streams, z.commands, False), z.commands)
    if "commands_cached" in workloads:
        await go(
            "commands_cached",
            f"{z.streams}_streams",
            lambda s, loc: s.commands(loc, z.streams, z.commands, True),
            z.commands,
        )
        await go(
            "commands_cached",
            "1_event_stream",
            lambda s, loc: s.commands_on_stream(loc, 1, z.stream_commands),
            z.stream_commands,
        )
        await go(
            "commands_cached",
            f"{z.long_stream}_event_stream",
            lambda s, loc: s.commands_on_stream(loc, z.long_stream, z.stream_commands),
            z.stream_commands,
        )
    if "batch_append" in workloads:
        await go(
            "batch_append",
            f"{z.batch_size}_per_append",
            lambda s, loc: s.batch_append(loc, z.batch_events, z.batch_size),
            z.batch_events,
        )
    if "rehydrate_10k" in workloads:
        await go(
            "rehydrate_10k",
            "cold",
            lambda s, loc: s.rehydrate(loc, z.long_stream, z.rehydrate_loads, False),
            z.rehydrate_loads,
            False,
        )
        await go(
            "rehydrate_10k",
            "cached",
            lambda s, loc: s.rehydrate(loc, z.long_stream, z.rehydrate_cached_loads, True),
            z.rehydrate_cached_loads,
            False,
        )
    if "rehydrate_100k" in workloads:  # cold loads of one long stream, without and with snapshots
        for variant, snapshots in (("cold", False), ("cold_snapshots", True)):
            await go(
                "rehydrate_100k",
                variant,
                lambda s, loc, snapshots=snapshots: s.rehydrate_snapshots(
                    loc, z.snapshot_stream, z.snapshot_every, z.rehydrate_loads, snapshots
                ),
                z.rehydrate_loads,
                False,
                needs="rehydrate_snapshots",
            )
    if "read_all" in workloads:
        await go("read_all", "decoded", lambda s, loc: s.read_all(loc, z.read_events), z.read_events)
    if "subscribe_catchup" in workloads:
        await go("subscribe_catchup", None, lambda s, loc: s.subscribe_catchup(loc, z.read_events), z.read_events)
    if "concurrent_writers" in workloads and backend.name == "postgres":
        streams = z.writers * 100
        await go(
            "concurrent_writers",
            f"{z.writers}_connections",
            lambda s, loc: s.concurrent_writers(loc, z.writers, streams, z.writer_commands),
            z.writer_commands,
        )
    if "commands_concurrent" in workloads and backend.name == "sqlite":
        tasks = z.concurrent_tasks
        await go(
            "commands_concurrent",
            f"{tasks}_tasks",
            lambda s, loc: s.concurrent_writers(loc, tasks, z.concurrent_streams, z.concurrent_commands),
            z.concurrent_commands,
            needs="concurrent_writers",
        )
    if "hot_stream" in workloads and backend.name != "memory":
        for tasks in (1, z.concurrent_tasks):
            await go(
                "hot_stream",
                f"{tasks}_task" + ("s" if tasks > 1 else ""),
                lambda s, loc, tasks=tasks: s.hot_stream(loc, tasks, z.hot_commands),
                z.hot_commands,
                needs="hot_stream",
            )
        half = max(1, z.concurrent_tasks // 2)
        await go(
            "hot_stream",
            f"2x{half}_processes",
            lambda s, loc: s.hot_stream_processes(loc, 2, half, z.hot_commands),
            z.hot_commands,
            needs="hot_stream_processes",
        )
    dcb_note: str | None = None  # why the store cannot run the DCB workloads (its entries raise NotSupported)
    if "dcb_claims" in workloads or "dcb_long" in workloads:
        from benchmarks.dcb_claims import DCB_RECORDERS, unsupported

        dcb_note = await unsupported(backend)  # one probe for both workloads

    def dcb_skipped(workload: str) -> bool:
        if dcb_note is None:
            return False
        progress(f"{backend.name:8} {workload} skipped: {dcb_note}")
        if notes is not None:
            notes.append(f"{workload} skipped on {backend.name}: {dcb_note}")
        return True

    if "dcb_claims" in workloads and not dcb_skipped("dcb_claims"):
        for tasks in (1, z.concurrent_tasks):
            await go(
                "dcb_claims",
                f"{tasks}_task" + ("s" if tasks > 1 else ""),
                lambda s, loc, tasks=tasks: s.dcb_claims(loc, tasks, z.dcb_claims),
                z.dcb_claims,
                needs="dcb_claims",
                where=lambda side: side.impl != "eventsourcing" or backend.name in DCB_RECORDERS,
            )
    if "dcb_long" in workloads and not dcb_skipped("dcb_long"):
        for variant, snapshots in (("no_snapshots", False), ("snapshots", True)):
            await go(
                "dcb_long",
                f"{variant}_{z.dcb_long_events}",
                lambda s, loc, snapshots=snapshots: s.dcb_long(loc, z.dcb_long_events, z.dcb_long_decisions, snapshots),
                z.dcb_long_decisions,
                needs="dcb_long",
                where=lambda side: side.impl != "eventsourcing" or backend.name in DCB_RECORDERS,
            )
    if "read_all_1m_rss" in workloads:
        results.extend(_rss(backend, impls, z.rss_events, progress))
    if "scaling" in workloads and backend.name == "postgres" and "epoch" in impls:
        from benchmarks.scaling import run_scaling  # epoch alone: how it scales, not a comparison

        results.extend(await run_scaling(backend.admin_dsn, z, progress, machine if machine is not None else {}))
    return results


def _rss(backend: Backend, impls: tuple[str, ...], events: int, progress: Progress) -> list[Result]:
    """Peak RSS growth while reading (and decoding) the whole log, each side in a subprocess of its own."""
    results = []
    for impl in impls:
        if impl in ("epoch-otel", "epoch-no-otel"):  # measured in a subprocess of its own, like plain epoch
            continue
        location = backend.fresh(impl.replace("eventsourcing", "es"))
        try:
            spec = {
                "impl": impl,
                "store": backend.name,
                "location": location,
                "events": events,
                "synchronous": backend.synchronous,
            }
            out = subprocess.run(
                [sys.executable, *(["-O"] if sys.flags.optimize else []), "-m", "benchmarks.rss", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
        finally:
            backend.drop(location)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        mb = measured["growth_kb"] / 1024
        variant = f"{events:,}_events".replace(",", "_")
        progress(f"{backend.name:8} read_all_1m_rss[{variant}]  {impl:13}: +{mb:,.1f} MB")
        results.append(summarise("read_all_1m_rss", backend.name, impl, [mb], "MB", False, variant, events))
    return results


def run(
    stores: tuple[str, ...],
    sizes: Sizes,
    *,
    workloads: tuple[str, ...] = WORKLOADS,
    impls: tuple[str, ...] = ("epoch", "eventsourcing", "raw"),
    pg_dsn: str | None = None,
    synchronous: str = "FULL",
    progress: Progress = lambda line: None,
) -> dict[str, Any]:
    """Run the workloads on the stores; the JSON document ``epoch bench --json`` prints."""
    machine = machine_info()
    machine["rounds"] = sizes.rounds
    machine["settings"] = {}
    results: list[Result] = []
    notes: list[str] = []
    for name in stores:
        backend = Backend(name, synchronous=synchronous, admin_dsn=pg_dsn)
        try:
            machine["settings"][name] = backend.settings()
            results.extend(asyncio.run(run_store(backend, sizes, workloads, impls, progress, notes, machine)))
        finally:
            backend.close()
    round_ratios(results)
    document: dict[str, Any] = {
        "machine": machine,
        "sizes": dataclasses.asdict(sizes),
        "results": [r.as_json() for r in results],
    }
    if notes:  # what did not run, and why
        document["notes"] = notes
    return document
