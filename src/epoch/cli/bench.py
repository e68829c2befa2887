"""``epoch bench``: epoch against the ``eventsourcing`` library and the raw drivers (issue 5).

The workloads live in the repository's ``benchmarks`` package (exposed by the editable install), so
this command runs from a checkout: ``make bench`` (which syncs the ``bench`` group), or
``.venv/bin/epoch bench``. The wheel does not ship the suite: it measures epoch against another library
and the raw drivers, needs that library, matplotlib and a PostgreSQL server, and its figures belong in
the repository's BENCHMARKS.md. Nothing here is imported until the command runs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from epoch.cli._options import JsonOption

__all__ = ["register"]

_STORES = ("memory", "sqlite", "postgres")
_IMPLS = ("epoch", "eventsourcing", "raw", "epoch-otel", "epoch-no-otel")  # (benchmarks.harness.IMPLS, the OTel sides)


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else str(exc)
        if missing == "benchmarks":  # an install, not a checkout
            message = "epoch bench runs from a checkout of epoch's repository: there, run `make bench`"
        else:  # a checkout without the bench group
            message = f"epoch bench needs the bench dependency group ({missing} is missing): run `make bench`"
        typer.echo(message, err=True)
        raise typer.Exit(1) from exc


def _stores(value: str | None, dsn: str | None) -> tuple[str, ...]:
    if value is None:
        return ("memory", "sqlite", "postgres") if dsn else ("memory", "sqlite")
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in _STORES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown store {', '.join(unknown) or value!r}: use {', '.join(_STORES)}", param_hint="--stores"
        )
    return names


def _impls(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in _IMPLS]
    if unknown or not names:
        shown = ", ".join(repr(name) for name in unknown) or repr(value)
        raise typer.BadParameter(f"unknown impl {shown}: use {', '.join(_IMPLS)}", param_hint="'--impls'")
    return names


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="CI-sized runs (smaller counts; 1M-event RSS read uses 50,000 events).")
    ] = False,
    json_output: JsonOption = False,
    stores: Annotated[
        str | None,
        typer.Option(
            "--stores",
            help="Comma-separated: memory,sqlite,postgres (default: memory,sqlite, plus postgres when a DSN is set).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for results.json, results.md and chart.png.")
    ] = None,
    workloads: Annotated[
        str | None, typer.Option("--workloads", help="Comma-separated subset of the workloads.")
    ] = None,
    impls: Annotated[
        str,
        typer.Option(
            "--impls",
            help="Comma-separated subset of epoch,eventsourcing,raw; epoch-otel is epoch with an OpenTelemetry "
            "SDK recording, epoch-no-otel epoch with OpenTelemetry not importable (EPOCH_BENCH_OTEL=1 adds both).",
        ),
    ] = "epoch,eventsourcing,raw",
    rounds: Annotated[int | None, typer.Option("--rounds", min=1, help="Interleaved rounds per workload.")] = None,
    scale: Annotated[
        float, typer.Option("--scale", min=0.0001, help="Multiply the --quick sizes (tests use a tiny scale).")
    ] = 1.0,
    synchronous: Annotated[
        str, typer.Option("--synchronous", help="SQLite synchronous level for every side.")
    ] = "FULL",
    pg_dsn: Annotated[
        str | None,
        typer.Option(
            "--pg-dsn",
            help="PostgreSQL server to create throwaway databases on (default: $EPOCH_BENCH_PG_DSN or $EPOCH_TEST_PG_DSN).",
        ),
    ] = None,
) -> None:
    """Benchmark epoch against eventsourcing and the raw drivers, interleaved; print a table or JSON."""
    dsn = pg_dsn or os.environ.get("EPOCH_BENCH_PG_DSN") or os.environ.get("EPOCH_TEST_PG_DSN")
    chosen = _stores(stores, dsn)
    sides = _impls(impls)
    if "postgres" in chosen and not dsn:
        raise typer.BadParameter("postgres needs a server: --pg-dsn or EPOCH_TEST_PG_DSN", param_hint="--stores")
    suite: Any = _load("benchmarks")
    report: Any = _load("benchmarks.report")
    # The suite imports these only mid-run: check them first, so that a missing one is one line, not a traceback.
    if "eventsourcing" in sides:
        _load("eventsourcing")
    if out is not None:
        _load("matplotlib")
    sizes = suite.Sizes.quick(scale) if quick or scale != 1.0 else suite.Sizes.full()
    if rounds is not None:
        sizes = type(sizes)(**{**_fields(sizes), "rounds": rounds})
    selected = tuple(suite.WORKLOADS) if workloads is None else tuple(w.strip() for w in workloads.split(","))
    unknown = [w for w in selected if w not in suite.WORKLOADS]
    if unknown:
        raise typer.BadParameter(
            f"unknown workload {', '.join(unknown)}: use {', '.join(suite.WORKLOADS)}", param_hint="--workloads"
        )

    def progress(line: str) -> None:
        if not json_output or sys.stderr.isatty():
            typer.echo(line, err=True)

    document = suite.run(
        chosen,
        sizes,
        workloads=selected,
        impls=sides,
        pg_dsn=dsn,
        synchronous=synchronous.upper(),
        progress=progress,
    )
    scaling: Any = _load("benchmarks.scaling_report")
    scaled = scaling.has_scaling(document)
    written: list[str] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
        notes = [f"- {note}" for note in document.get("notes", [])]  # what did not run, and why
        otel = report.otel_markdown(document)
        (out / "results.md").write_text(
            "\n".join(
                [report.markdown_table(document), *(["", *notes] if notes else []), *(["", otel] if otel else [])]
            )
            + "\n"
        )
        report.write_chart(document, str(out / "chart.png"))
        if scaled:
            (out / "scaling.md").write_text(scaling.markdown(document) + "\n")
            scaling.write_chart(document, str(out / "scaling.svg"))
        # (no chart.png when no workload has other sides to compare: a scaling-only run)
        names = ("results.json", "results.md", "chart.png", "scaling.md", "scaling.svg")
        written = [str(out / name) for name in names if (out / name).exists()]
    if json_output:
        typer.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        console = Console()
        if report.rows(document):  # (a scaling-only run has no side-by-side rows)
            console.print(report.render_table(document))
        if scaled:
            for table in scaling.render_tables(document):
                console.print(table)
        for note in document.get("notes", []):
            typer.echo(note)
        if out is not None:
            typer.echo(f"wrote {', '.join(written[:-1])} and {written[-1]}")


def _fields(sizes: Any) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in type(sizes).__slots__}


def register(app: typer.Typer) -> None:
    """Add ``epoch bench`` to the CLI."""
    app.command("bench")(bench)
