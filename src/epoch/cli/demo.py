"""``epoch demo``: the Users example end to end on the default SQLite store."""

from __future__ import annotations

import asyncio

import typer

from epoch.cli._options import StoreOption


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(store: StoreOption = None) -> None:
        """Run the Users example: commands, events, a retried conflict and time travel."""
        # Imported here so that other commands do not load the example; it ships in the wheel.
        from epoch.examples.users.demo import run_demo

        asyncio.run(run_demo(store, typer.echo))
