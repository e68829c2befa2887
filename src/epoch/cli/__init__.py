"""The ``epoch`` command line. Each subcommand lives in its own module and registers itself on ``app``.

The CLI holds no business logic: it only calls epoch's public API.
"""

from __future__ import annotations

import importlib
import io
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from epoch.errors import EpochError

__all__ = ["app", "main"]


class _Commands(TyperGroup):
    """Every subcommand: epoch's own errors print as one line on stderr with exit status 1.

    Done here rather than around ``app()`` so that every way of running a command (the console
    script, ``python -m epoch.cli``, typer's ``CliRunner`` in tests) fails the same way.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's Context base is its vendored, private click
        try:
            return super().invoke(ctx)
        except EpochError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands,
    name="epoch",
    help="epoch: event sourcing and CQRS for Python. Every command takes --store URL (default: $EPOCH_STORE or sqlite:///epoch.db).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per subcommand (or group); each defines ``register(app)``.
_COMMAND_MODULES = (
    "epoch.cli.demo",
    "epoch.cli.browse",
    "epoch.cli.migrate",
    "epoch.cli.copy",
    "epoch.cli.projections",
    "epoch.cli.bench",
    "epoch.cli.serve",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Console-script entry point: epoch's own errors print as one line on stderr, exit status 1.

    :class:`_Commands` does so for errors raised by a command; this catches those raised before one runs.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Plain text output may hold any printable character (a stream named "users-é"): on a terminal
        # whose encoding lacks it, print an escape rather than fail.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        app()
    except EpochError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
