"""``epoch copy SRC_URL DST_URL``: move a whole store, order preserved (e.g. SQLite -> PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from epoch.cli._options import JsonOption
from epoch.cli._stores import cli_store
from epoch.stores.copy import copy_store


async def _copy(src_url: str, dst_url: str, chunk_size: int, show_progress: bool) -> dict[str, Any]:
    # The source only reads: a mistyped SQLite path there is an error, not a new empty store to copy.
    async with cli_store(src_url) as src, cli_store(dst_url, create=True) as dst:
        if not show_progress:
            result = await copy_store(src, dst, chunk_size=chunk_size)
        else:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(
                SpinnerColumn(), TextColumn("copying: {task.completed} events"), TimeElapsedColumn(), transient=True
            ) as bar:
                task = bar.add_task("copy", total=None)
                result = await copy_store(
                    src, dst, chunk_size=chunk_size, progress=lambda n: bar.update(task, completed=n)
                )
    return {
        "source": src_url,
        "destination": dst_url,
        "copied": result.copied,
        "resumed": result.resumed,
        "timestamps_preserved": result.timestamps_preserved,
        "keys": result.keys,
    }


def register(app: typer.Typer) -> None:
    @app.command()
    def copy(
        src_url: Annotated[str, typer.Argument(help="Store to copy from.")],
        dst_url: Annotated[str, typer.Argument(help="Store to copy into (empty, or a partial copy to resume).")],
        as_json: JsonOption = False,
        chunk_size: Annotated[int, typer.Option(min=1, help="Events written per transaction.")] = 1000,
    ) -> None:
        """Copy every event of SRC_URL into DST_URL in order, with ids, versions, metadata and timestamps.

        Positions are renumbered by the destination. Run it again to resume an interrupted copy.
        """
        report = asyncio.run(_copy(src_url, dst_url, chunk_size, not as_json and sys.stderr.isatty()))
        if as_json:
            typer.echo(json.dumps(report))
            return
        what = "resumed: copied" if report["resumed"] else "copied"
        keys = f" and {report['keys']} personal-data keys" if report["keys"] else ""
        typer.echo(f"{what} {report['copied']} events{keys} from {src_url} to {dst_url}")
        if not report["timestamps_preserved"]:
            typer.echo("note: the destination cannot import, so the copies got new recorded_at times", err=True)
