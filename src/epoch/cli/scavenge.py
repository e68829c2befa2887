"""``epoch scavenge``: erase the events stream limits exclude (DESIGN §8, ``EventStore.scavenge``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store, resolve, shown


async def _scavenge(url: str, stream: str | None) -> dict[str, Any]:
    async with cli_store(url) as store:  # a store that does not exist has nothing to scavenge
        erased = await store.scavenge(stream)
        counted = getattr(store, "scavenge_counts", True)
    return {"store": shown(url), "stream": stream, "erased": erased if counted else None}


def register(app: typer.Typer) -> None:
    @app.command()
    def scavenge(
        stream: Annotated[str | None, typer.Option(help="Only this stream (default: every stream).")] = None,
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Erase the events that stream limits (max count, max age) exclude, for good.

        Reads honour the limits at once; the global log delivers the excluded events until a scavenge.
        On KurrentDB this starts the server's own scavenge, which reports no count.
        """
        report = asyncio.run(_scavenge(resolve(store), stream))
        if as_json:
            typer.echo(json.dumps(report))
        elif report["erased"] is None:
            typer.echo("started the server's scavenge (it erases in the background and reports no count)")
        else:
            where = f" of {report['stream']}" if stream is not None else ""
            typer.echo(f"erased {report['erased']} events{where}")
