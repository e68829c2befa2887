"""The ``scaling`` workload (issue 15 item 5): what one PostgreSQL primary carries as clients, app hosts
and projection workers are added.

- **Commands**: 1, 2, 4, 8, 16 and 32 concurrent clients spread evenly over 1, 2 and 4 app processes
  (points with fewer clients than processes are skipped), with and without the state cache: commands/s
  (all commands over the wall time from the release to the last process's end) and the p50/p99 latency
  of one ``execute`` as its client saw it. Every client deposits on streams of its own, so the curve
  shows the store and the server, not conflicts on shared streams (``hot_stream`` measures those).
- **Projections**: 1-4 ``PartitionedRunner`` workers (one per app process) of an exactly-once projection
  over a log of ``scaling_events`` events, 12 partitions: events/s from the release until the read
  model holds every event.

The app processes (benchmarks/scaling_worker.py) live for the whole run, one per app host. As root with
network namespaces (benchmarks/netns.py), each runs in a namespace of its own, reaching a durable
PostgreSQL server (fsync, synchronous_commit and full_page_writes on) over a veth link and a bridge;
otherwise they are OS processes on loopback, against the suite's server (``--pg-dsn``).
``EPOCH_BENCH_NETNS=0`` forces loopback. Which one ran, and the server's settings, are in the report
(``machine.scaling``). Rounds interleave every point: round 1 runs all of them, then round 2, ...; each
round on a fresh database.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmarks.backends import Backend
from benchmarks.harness import Result, Sizes, load_average, summarise

CLIENTS = (1, 2, 4, 8, 16, 32)
HOSTS = (1, 2, 4)
WORKERS = (1, 2, 3, 4)
PARTITIONS = 12  # divisible by every worker count: each worker holds the same share
APP_PROCESSES = max(*HOSTS, *WORKERS)
ROOT = Path(__file__).resolve().parent.parent


def command_variant(clients: int, hosts: int, cached: bool) -> str:
    return f"{clients}_clients_{hosts}_hosts_{'cached' if cached else 'uncached'}"


def projection_variant(workers: int) -> str:
    return f"{workers}_workers_{PARTITIONS}_partitions"


def points(round_: int = 0) -> list[tuple[int, int, bool]]:
    """Every (clients, hosts, cached) point, in the order round ``round_`` runs them: the two cache
    settings of a point back to back (the one first alternating by round), so a load spike on the
    shared machine hits both of them, not one half of the curve."""
    order = (False, True) if round_ % 2 == 0 else (True, False)
    return [(c, h, cached) for h in HOSTS for c in CLIENTS if c >= h for cached in order]


class Apps:
    """The app processes, one per app host: in network namespaces when they can be made, else on loopback."""

    def __init__(self, admin_dsn: str | None) -> None:
        from benchmarks import netns

        self.network: netns.Network | None = None
        reason = "EPOCH_BENCH_NETNS=0" if os.environ.get("EPOCH_BENCH_NETNS") == "0" else netns.unavailable()
        argv = ["-m", "benchmarks.scaling_worker"]
        if reason is None:
            netns.sweep()
            self.network = netns.Network(APP_PROCESSES, durable=True)
            self.admin_dsn = self.network.dsn
            self.placement = (
                f"{APP_PROCESSES} network namespaces (one app process each) on veth links to a bridge where a"
                " durable PostgreSQL server listens; all on this machine"
            )
            self.processes = [self.network.spawn(i, *argv, str(i)) for i in range(APP_PROCESSES)]
        else:
            if admin_dsn is None:
                raise RuntimeError("the scaling workload needs a PostgreSQL server (--pg-dsn)")
            self.admin_dsn = admin_dsn
            self.placement = f"{APP_PROCESSES} OS processes on loopback (no network namespaces: {reason})"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.processes = [
                subprocess.Popen(
                    [sys.executable, *argv, str(i)], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
                for i in range(APP_PROCESSES)
            ]

    def send(self, apps: range, message: object) -> None:
        line = (message if isinstance(message, str) else json.dumps(message)) + "\n"
        for i in apps:
            stdin = self.processes[i].stdin
            assert stdin is not None
            stdin.write(line.encode())
            stdin.flush()

    def receive(self, app: int) -> Any:
        stdout: IO[bytes] | None = self.processes[app].stdout
        assert stdout is not None
        line = stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"scaling app process {app} ended (exit code {self.processes[app].wait(10)})")
        return line if line == "ready" else json.loads(line)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    self.send(range(self.processes.index(process), self.processes.index(process) + 1), "exit")
                    process.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    process.kill()
        if self.network is not None:
            self.network.close()  # also kills what is left in the hosts and stops the server
        for process in self.processes:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


def _release(apps: Apps, used: range) -> float:
    for i in used:
        if apps.receive(i) != "ready":
            raise RuntimeError(f"scaling app process {i} did not get ready")
    released = time.time()
    apps.send(used, "go")
    return released


def _commands_point(
    apps: Apps, url: str, category: str, clients: int, hosts: int, cached: bool, sizes: Sizes
) -> tuple[float, float, float, int]:
    """commands/s, p50 ms, p99 ms, failed commands of one point."""
    used = range(hosts)
    total = max(sizes.scaling_commands, clients)
    for host in used:
        share = total // hosts + (1 if host < total % hosts else 0)
        job = {"op": "commands", "url": url, "category": category, "clients": clients // hosts, "commands": share}
        apps.send(range(host, host + 1), {**job, "streams": sizes.scaling_streams, "cached": cached})
    released = _release(apps, used)
    reports = [apps.receive(i) for i in used]
    latencies = sorted(us for report in reports for us in report["latencies_us"])
    seconds = max(report["finished"] for report in reports) - released
    p50, p99 = (_percentile(latencies, q) / 1000 for q in (0.50, 0.99))
    return len(latencies) / seconds, p50, p99, sum(report["failures"] for report in reports)


def _percentile(ordered: list[int], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))])


async def _fill(url: str, events: int) -> None:
    """``events`` deposits in category ``ledger``, 100 per stream, one append per stream (untimed)."""
    from benchmarks.domain import codec, deposit_event
    from epoch import NO_STREAM, open_store

    async with open_store(url) as store:
        for s in range(max(1, events // 100)):
            batch = [codec.encode(deposit_event(i)) for i in range(min(100, events - s * 100))]
            await store.append(f"ledger-{s}", batch, NO_STREAM)


def _projection_point(apps: Apps, url: str, workers: int, events: int) -> float:
    """events/s of ``workers`` partitioned workers catching up on the ledger."""
    import psycopg

    used = range(workers)
    table = f"tally_{workers}"
    job = {"op": "project", "url": url, "name": f"tally{workers}", "table": table, "partitions": PARTITIONS}
    apps.send(used, {**job, "categories": "ledger"})
    released = _release(apps, used)
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        while True:
            try:
                row = conn.execute(f"SELECT coalesce(sum(n), 0) FROM {table}").fetchone()
            except psycopg.errors.UndefinedTable:  # the first worker's setup has not committed yet
                row = (0,)
            if row is not None and int(row[0]) >= events:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projection workers did not finish {events} events in 600 s")
            time.sleep(0.01)
    seconds = time.time() - released
    apps.send(used, "stop")
    for i in used:
        apps.receive(i)
    return events / seconds


async def run_scaling(
    admin_dsn: str | None, sizes: Sizes, progress: Callable[[str], None], notes: dict[str, Any]
) -> list[Result]:
    """Every point of the workload, ``sizes.rounds`` interleaved rounds; ``notes`` gets the set-up."""
    apps = Apps(admin_dsn)
    server = Backend("postgres", admin_dsn=apps.admin_dsn)
    throughput: dict[str, list[float]] = {}
    latency: dict[str, dict[str, list[float]]] = {}
    failures: dict[str, list[int]] = {}
    load_before = load_average()
    try:
        notes["scaling"] = {"placement": apps.placement, "app_processes": APP_PROCESSES}
        notes["scaling"]["server"] = server.settings()
        # The machine is shared: each round's 1-minute load average at its start and end goes in the report.
        notes["scaling"]["round_load"] = []
        for round_ in range(sizes.rounds):
            started_load = load_average()
            url = server.fresh("scaling")
            try:
                for n, (clients, hosts, cached) in enumerate(points(round_)):
                    variant = command_variant(clients, hosts, cached)
                    rate, p50, p99, failed = _commands_point(apps, url, f"r{n}", clients, hosts, cached, sizes)
                    throughput.setdefault(variant, []).append(rate)
                    spread = latency.setdefault(variant, {"p50": [], "p99": []})
                    spread["p50"].append(p50)
                    spread["p99"].append(p99)
                    failures.setdefault(variant, []).append(failed)
                    progress(
                        f"postgres scaling[{variant}] round {round_ + 1}/{sizes.rounds}:"
                        f" {rate:,.0f} commands/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                    )
                await _fill(url, sizes.scaling_events)
                for workers in WORKERS:
                    variant = projection_variant(workers)
                    rate = _projection_point(apps, url, workers, sizes.scaling_events)
                    throughput.setdefault(variant, []).append(rate)
                    failures.setdefault(variant, []).append(0)
                    progress(f"postgres scaling[{variant}] round {round_ + 1}/{sizes.rounds}: {rate:,.0f} events/s")
            finally:
                server.drop(url)
            notes["scaling"]["round_load"].append([started_load, load_average()])
    finally:
        apps.close()
    load = (load_before, load_average())
    results = []
    for variant, samples in throughput.items():
        commands = variant in latency
        unit, n = ("commands/s", sizes.scaling_commands) if commands else ("events/s", sizes.scaling_events)
        result = summarise("scaling", "postgres", "epoch", samples, unit, True, variant, n, failures[variant])
        result.load = load
        if commands:
            result.latency_ms = {
                "p50": statistics.median(latency[variant]["p50"]),
                "p99": statistics.median(latency[variant]["p99"]),
                "p50_rounds": latency[variant]["p50"],
                "p99_rounds": latency[variant]["p99"],
            }
        results.append(result)
    return results
