"""The ``scaling`` workload's figures as people read them: tables (Markdown, rich) and the curves (SVG)."""

from __future__ import annotations

from typing import Any

from benchmarks.scaling import CLIENTS, HOSTS, WORKERS, command_variant, projection_variant


def _results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in document["results"] if r["workload"] == "scaling"}


def has_scaling(document: dict[str, Any]) -> bool:
    return bool(_results(document))


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    latency = result["latency_ms"]
    return f"{result['value']:,.0f} ({latency['p50']:.1f} / {latency['p99']:.1f})"


def command_rows(document: dict[str, Any]) -> list[list[str]]:
    """Per client count: commands/s (p50 / p99 ms) for each host count, without and with the cache."""
    found = _results(document)
    return [
        [str(clients)]
        + [_cell(found.get(command_variant(clients, hosts, cached))) for cached in (False, True) for hosts in HOSTS]
        for clients in CLIENTS
    ]


def command_header() -> list[str]:
    return ["clients"] + [
        f"{hosts} host{'s' if hosts > 1 else ''}, {'cache' if cached else 'no cache'}"
        for cached in (False, True)
        for hosts in HOSTS
    ]


def projection_rows(document: dict[str, Any]) -> list[list[str]]:
    found = _results(document)
    rows = []
    for workers in WORKERS:
        result = found.get(projection_variant(workers))
        if result is not None:
            spread = f"{result['min']:,.0f} - {result['max']:,.0f}"
            rows.append([str(workers), f"{result['value']:,.0f}", spread])
    return rows


def markdown(document: dict[str, Any]) -> str:
    """Both tables as Markdown: commands (medians of the rounds), then projection workers."""
    header = command_header()
    lines = [
        "commands/s (p50 / p99 latency in ms), medians of the rounds:",
        "",
        "| " + " | ".join(header) + " |",
        "|--:|" + "--:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in command_rows(document)]
    lines += [
        "",
        "projection catch-up (exactly once, 12 partitions), events/s:",
        "",
        "| workers | events/s (median) | min - max |",
        "|--:|--:|--:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in projection_rows(document)]
    return "\n".join(lines)


def render_tables(document: dict[str, Any]) -> list[Any]:
    """The same as ``rich`` tables (``epoch bench`` prints them after the main table)."""
    from rich.table import Table

    commands = Table(title="scaling: commands/s (p50 / p99 ms), medians of the rounds")
    for name in command_header():
        commands.add_column(name, justify="right")
    for row in command_rows(document):
        commands.add_row(*row)
    projections = Table(title="scaling: projection catch-up, events/s (12 partitions)")
    for name in ("workers", "events/s (median)", "min - max"):
        projections.add_column(name, justify="right")
    for row in projection_rows(document):
        projections.add_row(*row)
    return [commands, projections]


def write_chart(document: dict[str, Any], path: str) -> None:
    """The curves: commands/s and p99 latency against clients (a line per host count, solid with the
    cache, dashed without), and projection events/s against workers. SVG or PNG by ``path``'s suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = _results(document)
    fig, (rate, tail, project) = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {1: "#3b6ea8", 2: "#d08a2e", 4: "#4f9a58"}
    for hosts in HOSTS:
        for cached in (True, False):
            points = [
                (c, found[v]) for c in CLIENTS if c >= hosts and (v := command_variant(c, hosts, cached)) in found
            ]
            if not points:
                continue
            xs = [c for c, _ in points]
            style = {"color": colours[hosts], "linestyle": "-" if cached else "--", "marker": "o", "markersize": 3}
            label = f"{hosts} host{'s' if hosts > 1 else ''}, {'cache' if cached else 'no cache'}"
            rate.plot(xs, [r["value"] for _, r in points], label=label, **style)
            tail.plot(xs, [r["latency_ms"]["p99"] for _, r in points], label=label, **style)
    for ax, title, unit in ((rate, "commands/s", "commands/s"), (tail, "p99 latency of one command", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(CLIENTS), [str(c) for c in CLIENTS])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    tail.set_yscale("log")
    rate.set_ylim(bottom=0)
    rate.legend(fontsize=7)
    workers = [w for w in WORKERS if projection_variant(w) in found]
    if workers:
        values = [found[projection_variant(w)] for w in workers]
        project.errorbar(
            workers,
            [r["value"] for r in values],
            yerr=[[r["value"] - r["min"] for r in values], [r["max"] - r["value"] for r in values]],
            marker="o",
            color="#3b6ea8",
            capsize=3,
        )
    project.set_xticks(list(WORKERS))
    project.set_xlabel("PartitionedRunner workers (12 partitions)")
    project.set_ylabel("events/s")
    project.set_ylim(bottom=0)
    project.set_title("projection catch-up (min-max of the rounds)", fontsize=10)
    project.grid(alpha=0.3)
    placement = document["machine"].get("scaling", {}).get("placement", "")
    fig.suptitle(f"one PostgreSQL server, {document['machine'].get('cpus')} cores shared; {placement}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
