"""``epoch demo``: the Users example end to end on the default SQLite store."""

from __future__ import annotations

import asyncio
import json

import typer

from epoch.cli._demo_summary import demo_summary
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import check_store, resolve


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Run the Users example: commands, events, a retried conflict and time travel."""
        # Imported here so that other commands do not load the example; it ships in the wheel.
        from epoch.examples.users.demo import run_demo

        asyncio.run(check_store(resolve(store), create=True))  # a server that is down: one line, at once
        if as_json:  # what the demo wrote, read back: streams, events, final versions, and its text
            typer.echo(json.dumps(asyncio.run(demo_summary(run_demo, store)), indent=2))
            return
        asyncio.run(run_demo(store, typer.echo))
