"""``epoch bench`` smoke test: a tiny run on memory and SQLite prints the documented JSON shape.

Only the shape is checked: timings on shared machines prove nothing in a test (issue 5).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing")
pytest.importorskip("benchmarks")

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "commands",
    "commands_cached",
    "batch_append",
    "rehydrate_10k",
    "read_all",
    "subscribe_catchup",
    "read_all_1m_rss",
}


@pytest.mark.timeout(90)
def test_quick_json_has_every_workload_for_memory_and_sqlite(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    command = [
        sys.executable,
        "-c",
        "from epoch.cli import main; main()",
        "bench",
        "--quick",
        "--json",
        "--stores",
        "memory,sqlite",
        "--scale",
        "0.02",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=85, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)

    assert set(document) >= {"machine", "results"}
    assert {"python", "cpus", "settings"} <= set(document["machine"])
    assert document["machine"]["settings"]["sqlite"] == {"journal_mode": "WAL", "synchronous": "FULL"}
    for result in document["results"]:
        assert {"workload", "store", "impl", "value", "unit", "higher_is_better", "failures", "load"} <= set(result)
        assert result["impl"] in ("epoch", "eventsourcing", "raw")
        assert isinstance(result["value"], float | int)
        assert isinstance(result["higher_is_better"], bool)
        if result["workload"] != "read_all_1m_rss":
            assert len(result["failures"]) == len(result["samples"]) == result["rounds"]
            before, after = result["load"]
            assert before >= 0 and after >= 0
        key = (result["workload"], result["variant"], result["store"])
        others = {r["impl"] for r in document["results"] if (r["workload"], r["variant"], r["store"]) == key}
        if result["impl"] == "epoch" and result["workload"] != "read_all_1m_rss":
            # one ratio per round against each other side that ran the workload
            assert set(result["round_ratios"]) == others - {"epoch"}
            assert all(len(v) == result["rounds"] for v in result["round_ratios"].values())
    seen = {(r["workload"], r["store"], r["impl"]) for r in document["results"]}
    for store in ("memory", "sqlite"):
        for workload in WORKLOADS:
            for impl in ("epoch", "eventsourcing", "raw"):
                assert (workload, store, impl) in seen
    assert not any(r["workload"] == "concurrent_writers" for r in document["results"])  # PostgreSQL only
    new = {
        (r["workload"], r.get("variant"), r["store"], r["impl"])
        for r in document["results"]
        if r["workload"] not in WORKLOADS
    }
    # dcb_claims: epoch and eventsourcing's DCB recorders on memory; on SQLite epoch alone (eventsourcing has
    # no SQLite DCB recorder), or a note while the store's DCB entries raise NotSupported.
    sqlite_dcb = _dcb_on_sqlite(tmp_path_factory.mktemp("probe"))
    dcb = {("dcb_claims", v, "memory", i) for v in ("1_task", "16_tasks") for i in ("epoch", "eventsourcing")}
    if sqlite_dcb is None:
        dcb |= {("dcb_claims", v, "sqlite", "epoch") for v in ("1_task", "16_tasks")}
        assert "notes" not in document
    else:
        assert document["notes"] == [
            f"dcb_claims skipped on sqlite: {sqlite_dcb}",
            f"dcb_long skipped on sqlite: {sqlite_dcb}",
        ]
    # dcb_long: decisions over one long query, without and with snapshots; eventsourcing where it has a
    # DCB recorder (memory), the same fold in both variants (it keeps no snapshots of a query's state).
    long = {(f"{v}_200", "memory", i) for v in ("no_snapshots", "snapshots") for i in ("epoch", "eventsourcing")}
    if sqlite_dcb is None:
        long |= {(f"{v}_200", "sqlite", "epoch") for v in ("no_snapshots", "snapshots")}
        dcb |= {("dcb_long", *entry) for entry in long}
    else:
        dcb |= {("dcb_long", *entry) for entry in long if entry[1] == "memory"}
    assert new == {
        *dcb,
        ("commands_concurrent", "16_tasks", "sqlite", "epoch"),
        ("commands_concurrent", "16_tasks", "sqlite", "eventsourcing"),
        ("commands_concurrent", "16_tasks", "sqlite", "raw"),
        *(("hot_stream", v, "sqlite", i) for v in ("1_task", "16_tasks") for i in ("epoch", "eventsourcing", "raw")),
        ("hot_stream", "2x8_processes", "sqlite", "epoch"),  # only epoch runs commands from several processes
        # cold loads of one long stream without and with snapshots: the raw drivers have no snapshots
        *(
            ("rehydrate_100k", v, store, i)
            for v in ("cold", "cold_snapshots")
            for store in ("memory", "sqlite")
            for i in ("epoch", "eventsourcing")
        ),
    }
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "chart.png"}


def _dcb_on_sqlite(directory: Path) -> str | None:
    """What an SQLite store says to a query read: ``None`` when it serves one, else its NotSupported."""
    from epoch import NotSupported, Query, QueryItem, open_store

    async def probe() -> str | None:
        async with open_store(f"sqlite:///{directory / 'probe.db'}") as store:
            try:
                async for _ in store.read_query(Query([QueryItem(tags=("probe",))])):
                    pass
            except NotSupported as exc:
                return str(exc)
        return None

    return asyncio.run(probe())


@pytest.mark.timeout(90)
def test_dcb_claims_on_memory_against_eventsourcings_dcb_recorder() -> None:
    command = [sys.executable, "-c", "from epoch.cli import main; main()", "bench", "--quick", "--json"]
    command += ["--stores", "memory", "--workloads", "dcb_claims", "--scale", "0.05", "--rounds", "2"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=85, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["sizes"]["dcb_claims"] == 20
    results = document["results"]
    assert [(r["workload"], r["variant"], r["store"], r["impl"]) for r in results] == [
        ("dcb_claims", "1_task", "memory", "epoch"),
        ("dcb_claims", "1_task", "memory", "eventsourcing"),
        ("dcb_claims", "16_tasks", "memory", "epoch"),
        ("dcb_claims", "16_tasks", "memory", "eventsourcing"),
    ]
    for result in results:
        assert (result["unit"], result["higher_is_better"], result["n"], result["rounds"]) == ("claims/s", True, 20, 2)
        assert result["failures"] == [0, 0]
        assert len(result["samples"]) == 2 and all(value > 0 for value in result["samples"])
        if result["impl"] == "epoch":
            assert sorted(result["round_ratios"]) == ["eventsourcing"]
    assert "notes" not in document


@pytest.mark.timeout(90)
def test_epoch_bench_otel_runs_the_three_opentelemetry_cases_next_to_epoch(tmp_path: Path) -> None:
    # not importable (a subprocess that refuses it), the API without an SDK (plain epoch), an SDK recording
    command = [sys.executable, "-c", "from epoch.cli import main; main()", "bench", "--quick", "--json"]
    command += ["--stores", "memory,sqlite", "--workloads", "commands", "--impls", "epoch,raw", "--scale", "0.02"]
    command += ["--rounds", "2", "--out", str(tmp_path)]
    env = {**os.environ, "EPOCH_BENCH_OTEL": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=85, check=False, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [(r["store"], r["impl"]) for r in results] == [
        (store, impl) for store in ("memory", "sqlite") for impl in ("epoch", "epoch-no-otel", "epoch-otel", "raw")
    ]
    for epoch in (r for r in results if r["impl"] == "epoch"):
        assert sorted(epoch["round_ratios"]) == ["epoch-no-otel", "epoch-otel", "raw"]
        assert [len(v) for v in epoch["round_ratios"].values()] == [2, 2, 2]
    assert all(r["value"] > 0 and r["rounds"] == 2 for r in results)
    table = (tmp_path / "results.md").read_text().split("\n\n")[1].splitlines()
    assert table[0].startswith("| workload | store | unit | not importable (epoch-no-otel) | API, no SDK (epoch) |")
    assert [line.split(" | ")[:2] for line in table[2:]] == [["| commands", "memory"], ["| commands", "sqlite"]]


@pytest.mark.parametrize(
    ("blocked", "extra", "missing"),
    [("eventsourcing", [], "eventsourcing"), ("matplotlib", ["--out", "OUT"], "matplotlib")],
)
def test_a_missing_bench_dependency_is_one_line_before_any_work(
    blocked: str, extra: list[str], missing: str, tmp_path: Path
) -> None:
    # A checkout synced without the bench group: the suite imports these mid-run, after minutes of work.
    blocker = f"import sys; sys.modules[{blocked!r}] = None; from epoch.cli import main; main()"
    args = [a.replace("OUT", str(tmp_path / "out")) for a in extra]
    command = [sys.executable, "-c", blocker, "bench", "--quick", "--stores", "memory", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"epoch bench needs the bench dependency group ({missing} is missing): run `make bench`\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("placement", ["loopback", "namespaces"])
def test_scaling_reports_every_point(placement: str, pg_server_dsn: str, tmp_path: Path) -> None:
    from benchmarks.netns import unavailable
    from benchmarks.scaling import CLIENTS, HOSTS, WORKERS

    reason = unavailable()
    if placement == "namespaces" and reason is not None:
        pytest.skip(reason)
    command = [sys.executable, "-c", "from epoch.cli import main; main()", "bench", "--quick", "--json"]
    command += ["--stores", "postgres", "--workloads", "scaling", "--impls", "epoch", "--scale", "0.05"]
    command += ["--pg-dsn", pg_server_dsn, "--out", str(tmp_path)]
    env = {**os.environ, "EPOCH_BENCH_NETNS": "0" if placement == "loopback" else "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=110, check=False, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)

    scaling = document["machine"]["scaling"]
    [[before, after]] = scaling["round_load"]  # one round
    assert before >= 0 and after >= 0
    if placement == "loopback":
        assert scaling["placement"] == "4 OS processes on loopback (no network namespaces: EPOCH_BENCH_NETNS=0)"
    else:
        assert scaling["placement"].startswith("4 network namespaces (one app process each)")
        assert {k: scaling["server"][k] for k in ("fsync", "synchronous_commit", "full_page_writes")} == {
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
        }
    results = {r["variant"]: r for r in document["results"]}
    commands = {
        f"{c}_clients_{h}_hosts_{cache}" for cache in ("uncached", "cached") for h in HOSTS for c in CLIENTS if c >= h
    }
    projections = {f"{w}_workers_12_partitions" for w in WORKERS}
    assert set(results) == commands | projections
    assert len(commands) == 30
    for variant, result in results.items():
        assert (result["workload"], result["store"], result["impl"], result["rounds"]) == (
            "scaling",
            "postgres",
            "epoch",
            1,
        )
        assert result["value"] > 0 and result["failures"] == [0]
        if variant in commands:
            assert (result["unit"], result["n"]) == ("commands/s", 32)
            latency = result["latency_ms"]
            assert 0 < latency["p50"] <= latency["p99"]
            assert (latency["p50_rounds"], latency["p99_rounds"]) == ([latency["p50"]], [latency["p99"]])
        else:
            assert (result["unit"], result["n"], result["latency_ms"]) == ("events/s", 100, None)
    table = (tmp_path / "scaling.md").read_text()
    assert table.count("\n| ") == len(CLIENTS) + len(WORKERS) + 2  # the rows and the two headers
    assert (tmp_path / "scaling.svg").read_text().startswith("<?xml")
    # no chart.png: it compares sides, and scaling runs epoch alone
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "scaling.md", "scaling.svg"}
