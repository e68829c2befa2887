"""Running the sides interleaved (A B C A B C ...), and what a measurement becomes: medians with min/max.

The machines these run on are shared and noisy, so a number means something only next to the other
sides' numbers from the same rounds of the same run.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

IMPLS = ("epoch", "eventsourcing", "raw")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each workload does; ``--quick`` uses CI-sized numbers."""

    rounds: int = 5
    streams: int = 2_000
    commands: int = 20_000
    stream_commands: int = 2_000  # commands_cached on one 1-event / 10,000-event stream
    long_stream: int = 10_000
    batch_events: int = 50_000
    batch_size: int = 100
    rehydrate_loads: int = 3
    rehydrate_cached_loads: int = 500
    snapshot_stream: int = 100_000  # rehydrate_100k: one stream of this many events
    snapshot_every: int = 100
    read_events: int = 100_000
    writers: int = 8
    writer_commands: int = 4_000
    concurrent_tasks: int = 16  # commands_concurrent and hot_stream
    concurrent_streams: int = 800
    concurrent_commands: int = 8_000
    hot_commands: int = 3_200
    dcb_claims: int = 4_000  # conditional appends (DecisionHandler), each on a fresh tag
    dcb_long_events: int = 10_000  # dcb_long: the events the one query matches before the decisions
    dcb_long_decisions: int = 200
    rss_events: int = 1_000_000
    scaling_commands: int = 4_000  # per point of the scaling workload, over all its clients
    scaling_streams: int = 20  # per client
    scaling_events: int = 20_000  # the log the projection workers catch up on

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def quick(cls, scale: float = 1.0) -> Sizes:
        def s(n: int, floor: int = 1) -> int:
            return max(floor, round(n * scale))

        return cls(
            rounds=3 if scale >= 1 else 1,
            streams=s(200, 10),
            commands=s(2_000, 20),
            stream_commands=s(300, 10),
            long_stream=10_000 if scale >= 1 else s(10_000, 100),
            batch_events=s(5_000, 200),
            rehydrate_loads=1,
            rehydrate_cached_loads=s(100, 5),
            snapshot_stream=s(100_000, 1_000),
            read_events=s(20_000, 500),
            writer_commands=s(400, 16),
            concurrent_commands=s(800, 16),
            hot_commands=s(320, 16),
            dcb_claims=s(400, 16),
            dcb_long_events=s(10_000, 200),
            dcb_long_decisions=s(50, 5),
            rss_events=s(50_000, 1_000),
            scaling_commands=s(400, 32),
            scaling_streams=s(5, 1),
            scaling_events=s(2_000, 100),
        )


@dataclass(slots=True)
class Result:
    """One workload on one store by one side: the median of the rounds, with min and max."""

    workload: str
    store: str
    impl: str
    value: float
    unit: str
    higher_is_better: bool
    variant: str | None = None
    n: int = 0
    rounds: int = 1
    min: float = 0.0
    max: float = 0.0
    samples: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    """Per round: commands that failed (hot_stream: ``WrongExpectedVersion`` after the retries)."""
    load: tuple[float, float] | None = None
    """The machine's 1-minute load average before and after the workload (all its sides and rounds)."""
    round_ratios: dict[str, list[float]] = field(default_factory=dict)
    """epoch's result only: per round, how many times better epoch was than each other side (> 1: epoch)."""
    latency_ms: dict[str, Any] | None = None
    """scaling's command points: ``p50``/``p99`` (medians over the rounds) and ``p50_rounds``/``p99_rounds``."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    workload: str,
    store: str,
    impl: str,
    samples: list[float],
    unit: str,
    higher_is_better: bool,
    variant: str | None,
    n: int,
    failures: list[int] | None = None,
) -> Result:
    return Result(
        workload=workload,
        store=store,
        impl=impl,
        value=statistics.median(samples),
        unit=unit,
        higher_is_better=higher_is_better,
        variant=variant,
        n=n,
        rounds=len(samples),
        min=min(samples),
        max=max(samples),
        samples=samples,
        failures=failures or [],
    )


def ratio(epoch: Result, other: Result) -> float:
    """How many times better epoch is than ``other`` (> 1 means epoch wins), whatever the unit's direction."""
    if epoch.value == 0 or other.value == 0:
        return float("nan")
    return epoch.value / other.value if epoch.higher_is_better else other.value / epoch.value


def timed_threads(target: Callable[[int], None], count: int) -> float:
    """Seconds from starting ``count`` threads running ``target(0)`` ... ``target(count - 1)`` until the
    last one ends (the threaded sides' concurrent workloads)."""
    threads = [threading.Thread(target=target, args=(w,)) for w in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def round_ratios(results: list[Result]) -> None:
    """Fill each epoch result's ``round_ratios``: round i of epoch against round i of each other side
    (the rounds are interleaved, so round i of every side ran under the same conditions)."""
    groups: dict[tuple[str, str | None, str], dict[str, Result]] = {}
    for result in results:
        groups.setdefault((result.workload, result.variant, result.store), {})[result.impl] = result
    for sides in groups.values():
        epoch = sides.get("epoch")
        if epoch is None:
            continue
        for impl, other in sides.items():
            if impl != "epoch" and len(other.samples) == len(epoch.samples):
                epoch.round_ratios[impl] = [
                    round(_times_better(mine, theirs, epoch.higher_is_better), 3)
                    for mine, theirs in zip(epoch.samples, other.samples, strict=True)
                ]


def _times_better(mine: float, theirs: float, higher_is_better: bool) -> float:
    if mine <= 0 or theirs <= 0:
        return float("nan")
    return mine / theirs if higher_is_better else theirs / mine


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not Unix
        return 0.0


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, Python, library versions."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "optimize": sys.flags.optimize,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.+)", f.read())
        if match:
            info["cpu"] = match.group(1).strip()
        with open("/proc/meminfo") as f:
            match = re.search(r"MemTotal:\s+(\d+)", f.read())
        if match:
            info["memory_mb"] = int(match.group(1)) // 1024
    except OSError:
        pass
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    for name in ("msgspec", "eventsourcing", "psycopg"):
        try:
            from importlib.metadata import version

            info[name] = version(name)
        except Exception:
            info[name] = None
    return info


def peak_rss_kb() -> int:
    """The process's peak resident set (VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        match = re.search(r"VmHWM:\s+(\d+)", f.read())
    if match is None:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(match.group(1))


def current_rss_kb() -> int:
    with open("/proc/self/status") as f:
        match = re.search(r"VmRSS:\s+(\d+)", f.read())
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs``); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
