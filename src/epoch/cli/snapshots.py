"""``epoch snapshots status [--category C]`` and ``epoch snapshots drop NAME`` (docs/snapshots.md).

Both go through the store's :class:`~epoch.stores.SupportsSnapshots` capability; a store without it is
an error naming the store. Dropping snapshots changes nothing but the speed of the next loads.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from epoch._payload import escape_text
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store, fail
from epoch.stores import EventStore, SnapshotStatus, SupportsSnapshots, snapshot_store

CategoryOption = Annotated[
    str | None,
    typer.Option("--category", help="Only the streams of this category.", show_default=False),
]


def _capable(store: EventStore) -> SupportsSnapshots:
    capable = snapshot_store(store)
    if capable is None:
        fail(f"{type(store).__name__} keeps no snapshots")
    return capable


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
