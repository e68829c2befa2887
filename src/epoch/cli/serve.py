"""``epoch serve``: the read-only web explorer (needs the ``web`` extra: ``pip install '.[web]'``).

Starlette, Jinja2 and uvicorn are imported only when the command runs, so the rest of the CLI works
without the extra.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from epoch import open_store
from epoch._apps import load_factories
from epoch.cli._options import StoreOption
from epoch.cli._stores import check_store, resolve
from epoch.errors import MissingDependency

AppsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--app",
        help="module:attr of a function (store) -> ProjectionRunner, CommandHandler, a service with .handler, "
        "or a list of these; repeatable or comma-separated (default: $EPOCH_APP).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        store: StoreOption = None,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
        app_spec: AppsOption = None,
    ) -> None:
        """Browse the store in a web browser: streams, events, the live log, projections, decider states."""
        try:
            import uvicorn

            from epoch.web import create_app
        except ImportError as exc:
            if isinstance(exc, MissingDependency):
                raise
            raise MissingDependency(exc.name or "uvicorn", "web") from exc
        explorer = create_app(store, app_spec or None)  # checks --app
        # The explorer opens the store when it starts: check it now, so that a mistyped SQLite path or a
        # server that is down is one line here, not an empty new database or a failed startup in uvicorn's log.
        asyncio.run(check_store(resolve(store), create=False))
        asyncio.run(_check_apps(store, app_spec or None))
        typer.echo(f"epoch explorer on http://{host}:{port}/ (Ctrl+C to stop)")
        uvicorn.run(explorer, host=host, port=port, log_level="warning", ws="none", lifespan="on")


async def _check_apps(store: str | None, app_spec: list[str] | None) -> None:
    """Call each ``--app`` function once on the store, as the explorer will when it starts: one that raises
    or returns something the explorer cannot show is one line here, not a traceback in uvicorn's log."""
    from epoch.web._apps import register

    factories = load_factories(app_spec)
    if factories:
        async with open_store(store) as opened:
            register(factories, opened)
