"""Turning results into what people read: rows of ratios against the targets, a table and a chart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (workload, variant or None for any, store or None for any) -> (minimum epoch/eventsourcing ratio, minimum
# epoch share of raw). The most specific key wins. SQLite at FULL pays one fsync per command on every
# side, so there the raw driver is the ceiling and the target is a share of it.
TARGETS: dict[tuple[str, str | None, str | None], tuple[float | None, float | None]] = {
    ("commands", None, None): (3.0, None),
    ("commands", None, "sqlite"): (None, 0.8),
    ("commands", None, "postgres"): (2.5, 0.8),
    ("batch_append", None, None): (3.0, 0.7),
    ("batch_append", None, "sqlite"): (3.0, 1.0),
    ("rehydrate_10k", "cold", None): (3.0, None),
    ("rehydrate_10k", "cold", "sqlite"): (3.0, 0.8),
    ("read_all", None, None): (2.0, 0.7),
    ("concurrent_writers", None, None): (4.0, 0.9),
    ("commands_concurrent", None, None): (5.0, 3.0),
    # Conditional appends (DecisionHandler, with its decider and codec) at least as fast as
    # eventsourcing's DCB recorder driven directly: its in-memory and PostgreSQL recorders (none for SQLite).
    ("dcb_claims", None, None): (1.0, None),
    ("dcb_claims", None, "sqlite"): (None, None),  # no target: eventsourcing has no SQLite DCB recorder
    # Decisions over a long query: no target (eventsourcing keeps no snapshots of a query's state, and there
    # is no raw side); the rows show what snapshots buy.
    ("dcb_long", None, None): (None, None),
}
RSS_LIMIT_MB = 100.0
OTEL_IMPLS = ("epoch-no-otel", "epoch-otel")
"""epoch without OpenTelemetry importable, and with an SDK recording (plain epoch: the API, no SDK)."""
CACHED_LENGTH_LIMIT = 1.5


@dataclass(frozen=True, slots=True)
class Row:
    workload: str
    variant: str | None
    store: str
    unit: str
    values: dict[str, float]  # impl -> median
    spread: dict[str, tuple[float, float]]  # impl -> (min, max)
    vs_eventsourcing: float | None  # > 1: epoch is better
    of_raw: float | None  # epoch as a share of the raw driver (1.0 = as fast)
    target: str  # what the row must reach, '' if nothing
    met: bool | None


def _better(value: float, other: float, higher_is_better: bool) -> float | None:
    if value <= 0 or other <= 0:
        return None
    return value / other if higher_is_better else other / value


def rows(document: dict[str, Any]) -> list[Row]:
    grouped: dict[tuple[str, str | None, str], list[dict[str, Any]]] = {}
    for result in document["results"]:
        if result["workload"] == "scaling":  # epoch alone, no sides to compare: benchmarks/scaling_report.py
            continue
        grouped.setdefault((result["workload"], result.get("variant"), result["store"]), []).append(result)
    out = []
    for (workload, variant, store), results in grouped.items():
        by_impl = {r["impl"]: r for r in results}
        epoch = by_impl.get("epoch")
        higher = results[0]["higher_is_better"]
        vs_es = of_raw = None
        if epoch is not None and "eventsourcing" in by_impl:
            vs_es = _better(epoch["value"], by_impl["eventsourcing"]["value"], higher)
        if epoch is not None and "raw" in by_impl:
            of_raw = _better(epoch["value"], by_impl["raw"]["value"], higher)
        target, met = _target(workload, variant, store, vs_es, of_raw, epoch, document)
        out.append(
            Row(
                workload,
                variant,
                store,
                results[0]["unit"],
                {impl: r["value"] for impl, r in by_impl.items()},
                {impl: (r["min"], r["max"]) for impl, r in by_impl.items()},
                vs_es,
                of_raw,
                target,
                met,
            )
        )
    return out


def _target(
    workload: str,
    variant: str | None,
    store: str,
    vs_es: float | None,
    of_raw: float | None,
    epoch: dict[str, Any] | None,
    document: dict[str, Any],
) -> tuple[str, bool | None]:
    if workload == "hot_stream" and epoch is not None and variant != "1_task":
        # every command succeeds with the default retries, at no less than one task's sequential rate
        lost = sum(epoch.get("failures") or [])
        one = _epoch_result(document, workload, "1_task", store)
        if one is None or (variant or "").endswith("processes"):
            return "0 failed", lost == 0
        return f"0 failed, >= 1 task ({one['value']:,.0f}/s)", lost == 0 and epoch["value"] >= one["value"]
    if workload == "read_all_1m_rss" and epoch is not None:
        return f"< {RSS_LIMIT_MB:.0f} MB", epoch["value"] < RSS_LIMIT_MB
    if workload == "commands_cached" and variant and variant.startswith("10000_event"):
        short = next(
            (
                r
                for r in document["results"]
                if r["workload"] == workload
                and r["store"] == store
                and r["impl"] == "epoch"
                and r.get("variant") == "1_event_stream"
            ),
            None,
        )
        if short is None or epoch is None:
            return "", None
        return f"within {CACHED_LENGTH_LIMIT}x of 1-event", short["value"] / epoch["value"] <= CACHED_LENGTH_LIMIT
    spec = next(
        (
            TARGETS[key]
            for key in (
                (workload, variant, store),
                (workload, None, store),
                (workload, variant, None),
                (workload, None, None),
            )
            if key in TARGETS
        ),
        None,
    )
    if spec is None or spec == (None, None) or (workload == "rehydrate_10k" and variant != "cold"):
        return "", None
    min_es, min_raw = spec
    parts, met = [], True
    if min_es is not None:
        parts.append(f">= {min_es:g}x es")
        met = met and vs_es is not None and vs_es >= min_es
    if min_raw is not None:
        parts.append(f">= {min_raw:.0%} raw")
        met = met and of_raw is not None and of_raw >= min_raw
    return ", ".join(parts), met


def _epoch_result(document: dict[str, Any], workload: str, variant: str | None, store: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in document["results"]
            if (r["workload"], r.get("variant"), r["store"], r["impl"]) == (workload, variant, store, "epoch")
        ),
        None,
    )


def by_round(document: dict[str, Any], row: Row, impl: str) -> str:
    """epoch's per-round ratios against ``impl`` as ``min / median`` (e.g. ``1.61x / 1.74x``)."""
    epoch = _epoch_result(document, row.workload, row.variant, row.store)
    ratios = (epoch or {}).get("round_ratios", {}).get(impl) or []
    if not ratios:
        return "-"
    ordered = sorted(ratios)
    return f"{ordered[0]:.2f}x / {ordered[len(ordered) // 2]:.2f}x"


def _failed(document: dict[str, Any], row: Row) -> str:
    """Failed commands per side (epoch / eventsourcing / raw), summed over the rounds, where any failed."""
    counts = {
        r["impl"]: sum(r.get("failures") or [])
        for r in document["results"]
        if (r["workload"], r.get("variant"), r["store"]) == (row.workload, row.variant, row.store)
    }
    if not any(counts.values()) and row.workload != "hot_stream":
        return "-"
    return " / ".join(f"{counts[impl]}" if impl in counts else "-" for impl in ("epoch", "eventsourcing", "raw"))


def _load(document: dict[str, Any], row: Row) -> str:
    epoch = _epoch_result(document, row.workload, row.variant, row.store)
    load = (epoch or {}).get("load")
    return "-" if not load else f"{load[0]:.1f} / {load[1]:.1f}"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "MB"):
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def render_table(document: dict[str, Any]) -> Any:
    """A ``rich`` table: medians per side, epoch's ratio to eventsourcing and share of raw, target met."""
    from rich.table import Table

    table = Table(title="epoch bench (medians of interleaved rounds)")
    # epoch-no-otel (OpenTelemetry not importable) and epoch-otel (an SDK recording) get columns only
    # when they ran.
    otel = [impl for impl in OTEL_IMPLS if any(r["impl"] == impl for r in document["results"])]
    for name, justify in (
        ("workload", "left"),
        ("store", "left"),
        ("unit", "left"),
        ("epoch", "right"),
        *[
            column
            for impl in otel
            for column in ((impl, "right"), (f"epoch vs {impl} by round (min / median)", "right"))
        ],
        ("eventsourcing", "right"),
        ("raw", "right"),
        ("epoch vs es", "right"),
        ("epoch % raw", "right"),
        ("target", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows(document):
        label = row.workload + (f" [{row.variant}]" if row.variant else "")
        mark = "" if row.met is None else (" [green]met[/]" if row.met else " [red]missed[/]")
        with_otel = [
            cell for impl in otel for cell in (_fmt(row.values.get(impl), row.unit), by_round(document, row, impl))
        ]
        table.add_row(
            label,
            row.store,
            row.unit,
            _fmt(row.values.get("epoch"), row.unit),
            *with_otel,
            _fmt(row.values.get("eventsourcing"), row.unit),
            _fmt(row.values.get("raw"), row.unit),
            "-" if row.vs_eventsourcing is None else f"{row.vs_eventsourcing:.2f}x",
            "-" if row.of_raw is None else f"{row.of_raw:.0%}",
            row.target + mark,
        )
    return table


def markdown_table(document: dict[str, Any]) -> str:
    """The same table as Markdown (for BENCHMARKS.md)."""
    lines = [
        "| workload | store | unit | epoch | eventsourcing | raw | epoch vs es | vs es by round (min / median)"
        " | epoch % raw | vs raw by round (min / median) | failed | load before/after | target |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows(document):
        label = row.workload + (f" [{row.variant}]" if row.variant else "")
        mark = "" if row.met is None else (" **met**" if row.met else " **missed**")
        cells = [
            label,
            row.store,
            row.unit,
            _fmt(row.values.get("epoch"), row.unit),
            _fmt(row.values.get("eventsourcing"), row.unit),
            _fmt(row.values.get("raw"), row.unit),
            "-" if row.vs_eventsourcing is None else f"{row.vs_eventsourcing:.2f}x",
            by_round(document, row, "eventsourcing"),
            "-" if row.of_raw is None else f"{row.of_raw:.0%}",
            by_round(document, row, "raw"),
            _failed(document, row),
            _load(document, row),
            row.target + mark,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def otel_markdown(document: dict[str, Any]) -> str:
    """The three OpenTelemetry cases per workload, with epoch's (API, no SDK) per-round ratios to the
    others ('' when neither ran)."""
    found = [row for row in rows(document) if any(impl in row.values for impl in OTEL_IMPLS)]
    if not found:
        return ""
    lines = [
        "| workload | store | unit | not importable (epoch-no-otel) | API, no SDK (epoch) | SDK recording (epoch-otel)"
        " | epoch vs no-otel by round (min / median) | epoch vs otel by round (min / median) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in found:
        label = row.workload + (f" [{row.variant}]" if row.variant else "")
        cells = [label, row.store, row.unit]
        cells += [_fmt(row.values.get(impl), row.unit) for impl in ("epoch-no-otel", "epoch", "epoch-otel")]
        cells += [by_round(document, row, impl) for impl in OTEL_IMPLS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_chart(document: dict[str, Any], path: str) -> None:
    """A PNG: per store, how many times eventsourcing's figure epoch and the raw driver reach (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [r for r in rows(document) if r.workload != "read_all_1m_rss" and "eventsourcing" in r.values]
    stores = sorted({r.store for r in table}, key=("memory", "sqlite", "postgres").index)
    if not stores:
        return
    fig, axes = plt.subplots(
        1, len(stores), figsize=(6 * len(stores), 0.45 * max(len(table) // len(stores), 4) + 1.5), squeeze=False
    )
    for ax, store in zip(axes[0], stores, strict=True):
        mine = [r for r in table if r.store == store]
        labels = [r.workload + (f"\n[{r.variant}]" if r.variant else "") for r in mine]
        y = range(len(mine))
        epoch = [r.vs_eventsourcing or 0 for r in mine]
        raw = [
            (_better(r.values["raw"], r.values["eventsourcing"], r.unit != "ms") or 0) if "raw" in r.values else 0
            for r in mine
        ]
        ax.barh([i - 0.2 for i in y], epoch, height=0.4, label="epoch", color="#3b6ea8")
        ax.barh([i + 0.2 for i in y], raw, height=0.4, label="raw driver", color="#bbbbbb")
        ax.axvline(1.0, color="#c0392b", linewidth=1, label="eventsourcing = 1")
        ax.set_xscale("log")
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{store}: times eventsourcing (higher is better)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
