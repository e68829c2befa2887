"""``epoch snapshots status [--category C]`` and ``epoch snapshots drop NAME`` (docs/snapshots.md), and for
DecisionHandler's snapshots ``epoch snapshots queries`` and ``epoch snapshots drop-queries``.

They go through the store's :class:`~epoch.stores.SupportsSnapshots` (or
:class:`~epoch.stores.SupportsQuerySnapshots`) capability; a store without it is an error naming the
store. Dropping snapshots changes nothing but the speed of the next loads and decisions.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from epoch._payload import escape_text
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store, fail
from epoch.stores import (
    EventStore,
    QuerySnapshotStatus,
    SnapshotStatus,
    SupportsQuerySnapshots,
    SupportsSnapshots,
    query_snapshot_store,
    snapshot_store,
)

CategoryOption = Annotated[
    str | None,
    typer.Option("--category", help="Only the streams of this category.", show_default=False),
]


def _capable(store: EventStore) -> SupportsSnapshots:
    capable = snapshot_store(store)
    if capable is None:
        fail(f"{type(store).__name__} keeps no snapshots")
    return capable


def _query_capable(store: EventStore) -> SupportsQuerySnapshots:
    capable = query_snapshot_store(store)
    if capable is None:
        fail(f"{type(store).__name__} keeps no query snapshots")
    return capable


def _query_row(status: QuerySnapshotStatus) -> dict[str, Any]:
    return {
        "key": status.key,
        "query": status.label,
        "schema_version": status.schema_version,
        "position": status.position,
        "events": status.count,
        "usable": status.usable,
        "taken_at": status.taken_at.isoformat(),
    }


def _row(status: SnapshotStatus) -> dict[str, Any]:
    return {
        "stream": status.stream,
        "version": status.version,
        "schema_version": status.schema_version,
        "taken_at": status.taken_at.isoformat(),
        "snapshots": status.count,
    }


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Snapshots of stream states: which streams have them, and dropping them.", no_args_is_help=True
    )
    app.add_typer(group, name="snapshots")

    @group.command()
    def status(category: CategoryOption = None, store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Each stream with snapshots: the newest one's version and schema version, and how many are kept."""

        async def run() -> list[SnapshotStatus]:
            async with cli_store(store) as opened:
                return await _capable(opened).snapshot_status(category)

        rows = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps([_row(r) for r in rows], indent=2))
        elif not rows:
            typer.echo("no snapshots")
        else:
            for r in rows:
                typer.echo(
                    f"{escape_text(r.stream)}  version {r.version}  schema {r.schema_version}  "
                    f"{r.count} kept  taken {r.taken_at.isoformat(timespec='seconds')}"
                )

    @group.command()
    def drop(
        name: Annotated[str, typer.Argument(help="A stream (a name with '-') or a whole category.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Delete the snapshots of a stream or of a category (the events stay; loads fold them again)."""

        async def run() -> int:
            async with cli_store(store) as opened:
                return await _capable(opened).drop_snapshots(name)

        dropped = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps({"name": name, "dropped": dropped}))
        else:
            typer.echo(f"dropped {dropped} snapshot{'' if dropped == 1 else 's'} of {escape_text(name)}")

    @group.command()
    def queries(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Each DecisionHandler snapshot: its query, schema version, the events it folds, and whether it is
        usable (no erasure in the store since it was taken)."""

        async def run() -> list[QuerySnapshotStatus]:
            async with cli_store(store) as opened:
                return await _query_capable(opened).query_snapshot_status()

        rows = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps([_query_row(r) for r in rows], indent=2))
        elif not rows:
            typer.echo("no query snapshots")
        else:
            for r in rows:
                state = "usable" if r.usable else "unusable (an erasure since)"
                typer.echo(
                    f"{escape_text(r.label)}  schema {r.schema_version}  {r.count} events to position {r.position}  "
                    f"{state}  key {r.key[:12]}  taken {r.taken_at.isoformat(timespec='seconds')}"
                )

    @group.command("drop-queries")
    def drop_queries(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Delete every DecisionHandler snapshot (the events stay; decisions fold them again)."""

        async def run() -> int:
            async with cli_store(store) as opened:
                return await _query_capable(opened).drop_query_snapshots()

        dropped = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps({"dropped": dropped}))
        else:
            typer.echo(f"dropped {dropped} query snapshot{'' if dropped == 1 else 's'}")
