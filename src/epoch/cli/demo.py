"""``epoch demo``: the Users example end to end on the default SQLite store."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from epoch.cli._demo_summary import demo_summary
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import check_store, resolve
from epoch.errors import MissingDependency


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        store: StoreOption = None,
        as_json: JsonOption = False,
        http: Annotated[
            bool, typer.Option("--http", help="Serve the Users HTTP API instead (see docs/http.md).")
        ] = False,
        host: Annotated[str, typer.Option(help="With --http: interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="With --http: port to listen on.")] = 8000,
    ) -> None:
        """Run the Users example: commands, events, a retried conflict and time travel (or serve it over HTTP)."""
        if http:
            serve_http(store, host, port)
            return
        # Imported here so that other commands do not load the example; it ships in the wheel.
        from epoch.examples.users.demo import run_demo

        asyncio.run(check_store(resolve(store), create=True))  # a server that is down: one line, at once
        if as_json:  # what the demo wrote, read back: streams, events, final versions, and its text
            typer.echo(json.dumps(asyncio.run(demo_summary(run_demo, store)), indent=2))
            return
        asyncio.run(run_demo(store, typer.echo))


def serve_http(store: str | None, host: str, port: int) -> None:
    """Serve ``epoch.examples.users.http`` with uvicorn until stopped."""
    try:
        import uvicorn

        from epoch.examples.users.http import create_app
    except ImportError as exc:
        if isinstance(exc, MissingDependency):
            raise
        raise MissingDependency(exc.name or "uvicorn", "web") from exc
    asyncio.run(check_store(resolve(store), create=True))
    typer.echo(f"Users HTTP API on http://{host}:{port}/directories/main (Ctrl+C to stop)")
    uvicorn.run(create_app(resolve(store)), host=host, port=port, log_level="warning", ws="none", lifespan="on")
