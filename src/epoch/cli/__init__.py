"""The ``epoch`` command line. Each subcommand lives in its own module and registers itself on ``app``.

The CLI holds no business logic: it only calls epoch's public API.
"""

from __future__ import annotations

import importlib
import io
import re
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer import TyperException

# typer's own copy of click: these are the classes its parser raises (typer re-exports only BadParameter).
from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError, NoSuchOption, UsageError
from typer.core import TyperGroup

from epoch._payload import escape_text
from epoch.cli._stores import fail, quiet_driver_logs
from epoch.errors import EpochError

__all__ = ["app", "main"]


class _Commands(TyperGroup):
    """Every subcommand fails the way git and kubectl do: one line on stderr and a non-zero exit status.

    Usage errors (an unknown option or command, ``--limit abc``, a missing argument) exit 2 with
    ``error: ...`` and one ``try 'epoch read --help'`` line, instead of typer's usage text and box;
    epoch's own errors exit 1 with ``error: ...``. Done here rather than around ``app()`` so that every
    way of running a command (the console script, ``python -m epoch.cli``, typer's ``CliRunner`` in
    tests) fails the same way.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's Context base is its vendored, private click
        quiet_driver_logs()
        try:
            return super().invoke(ctx)
        except EpochError as exc:
            fail(str(exc))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # the caller handles click's exceptions itself
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            done = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:  # `epoch` or `epoch projections` alone: the help, as usual
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            typer.echo(f"error: {escape_text(usage_message(exc))}", err=True)
            if exc.ctx is not None:
                typer.echo(f"try '{escape_text(exc.ctx.command_path)} --help'", err=True)
            sys.exit(exc.exit_code)
        except TyperException as exc:  # click's other errors (a file it could not open)
            typer.echo(f"error: {escape_text(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        # Not standalone, typer returns the command's value, or the status of a typer.Exit it raised.
        sys.exit(done if isinstance(done, int) else 0)


def usage_message(exc: UsageError) -> str:
    """A usage error as the text after ``error: ``: lower case, no final period, one line."""
    if isinstance(exc, NoSuchOption):
        text = exc.message
        if exc.possibilities:
            text += f" (did you mean {', '.join(sorted(exc.possibilities))}?)"
    elif isinstance(exc, BadParameter) and not isinstance(exc, MissingParameter):
        hint = exc.param_hint if exc.param_hint is not None else exc.param.get_error_hint() if exc.param else None
        if hint is None:  # raised by a command about its own input: the message says it all
            return exc.message
        if not isinstance(hint, str):
            hint = " / ".join(repr(h) for h in hint)
        text = f"invalid value for {hint}: {_value_problem(exc)}"
    else:
        text = exc.format_message()
        text = re.sub(r"\. Did you mean (.*)\?$", r" (did you mean \1?)", text)  # "No such command 'raed'."
        text = re.sub(r"^Got unexpected extra argument(?:\(s\)|s)? \((.*)\)$", r"unexpected extra argument: \1", text)
    text = text.rstrip(".")
    return text[:1].lower() + text[1:]


def _value_problem(exc: BadParameter) -> str:
    """What is wrong with an option's value. Typer checks types with pydantic: its first error holds the
    value given, so ``--limit abc`` says ``'abc' is not an integer`` rather than "Input should be a valid
    integer, unable to parse string as an integer"."""
    errors = getattr(exc.__cause__, "errors", None)
    first = errors()[0] if callable(errors) and errors() else None
    if not isinstance(first, dict) or "input" not in first:
        return exc.message
    value = first["input"]
    kind = first.get("type")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{value!r} is not an integer"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{value!r} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{value!r} is not true or false"
    limits = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    context = first.get("ctx") or {}
    if kind in limits and context:
        return f"{value!r} is not {limits[kind]} {next(iter(context.values()))}"
    message = str(first.get("msg", exc.message))
    return f"{value!r}: {message[:1].lower() + message[1:]}"


app = typer.Typer(
    cls=_Commands,
    name="epoch",
    help="epoch: event sourcing and CQRS for Python. Every command but copy and bench takes --store URL (default: $EPOCH_STORE or sqlite:///epoch.db).",
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
    "epoch.cli.forget",
    "epoch.cli.scavenge",
    "epoch.cli.projections",
    "epoch.cli.snapshots",
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
        typer.echo(f"error: {escape_text(str(exc))}", err=True)
        raise SystemExit(1) from None
