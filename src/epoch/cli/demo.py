"""``epoch demo``: the Users example end to end on the default SQLite store."""

from __future__ import annotations

import asyncio

import typer

from epoch.cli._options import StoreOption


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(store: StoreOption = None) -> None:
        """Run the Users example: commands, events, a retried conflict and time travel."""
        try:
            from examples.users.demo import run_demo
        except ImportError as exc:  # installed from a wheel, without the repository's examples/
            raise typer.BadParameter("the demo runs from a checkout of epoch (it needs examples/users)") from exc
        asyncio.run(run_demo(store, typer.echo))
