"""``epoch projections status`` and ``epoch projections rebuild NAME``.

Projections are found through ``--app module:attr`` (or ``$EPOCH_APP``): ``attr`` is a function that
takes the open store and returns a :class:`~epoch.projections.ProjectionRunner`, e.g.
``--app epoch.examples.users.projections:runner``. Without it, ``status`` shows every checkpoint saved in the
store's database (without per-projection filters, so lag counts all events).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Any

import typer

from epoch import ConfigurationError, EventStore
from epoch._apps import Factory, call_factory, env_app, load_factory, saved_status
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store
from epoch.projections import (
    ProjectionFailed,
    ProjectionRunner,
    ProjectionStatus,
    format_duration,
)

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="module:attr of a function (store) -> ProjectionRunner (default: $EPOCH_APP).",
        show_default=False,
    ),
]


def load_runner_factory(spec: str | None) -> tuple[str, Factory] | None:
    """The ``module:attr`` ``--app`` (or ``$EPOCH_APP``) gives and the function it names; ``None`` when neither is set."""
    spec = spec or env_app()
    if not spec:
        return None
    try:
        return spec, load_factory(spec)
    except ConfigurationError as exc:  # a problem with the option: the one-line usage error
        raise typer.BadParameter(str(exc)) from exc


def _runner(spec: str, factory: Factory, store: EventStore) -> ProjectionRunner:
    runner = call_factory(spec, factory, store)
    if not isinstance(runner, ProjectionRunner):
        raise typer.BadParameter(f"the --app function returned {type(runner).__name__}, not a ProjectionRunner")
    return runner


def _status_line(s: ProjectionStatus) -> str:
    state = "FAILING" if s.failing else "ok"
    parts = [
        f"{s.name:<24}",
        f"checkpoint {s.checkpoint}",
        f"head {s.head}",
        f"lag {s.lag_events} events / {format_duration(s.lag_seconds)}",
        f"{s.events_per_second:.1f} events/s",
        f"parked {s.parked}",
        state,
    ]
    line = "  ".join(parts)
    if s.error:
        line += f"\n    {s.error}"
    return line


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Projections: checkpoints, lag and rebuilds.", no_args_is_help=True)
    app.add_typer(group, name="projections")

    @group.command()
    def status(store: StoreOption = None, as_json: JsonOption = False, app_spec: AppOption = None) -> None:
        """Each projection's checkpoint, the head, lag (events and seconds), events/s, failures and parked events."""
        factory = load_runner_factory(app_spec)

        async def run() -> list[ProjectionStatus]:
            async with cli_store(store) as opened:
                return await saved_status(opened, [] if factory is None else [_runner(*factory, opened)])

        rows = asyncio.run(run())
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        elif not rows:
            typer.echo("no projections (pass --app module:attr to list those not started yet)")
        else:
            for row in rows:
                typer.echo(_status_line(row))
        if any(r.failing for r in rows):
            raise typer.Exit(1)

    @group.command()
    def rebuild(
        name: Annotated[str, typer.Argument(help="The projection to rebuild.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
        app_spec: AppOption = None,
    ) -> None:
        """Reset a projection (read model, checkpoint, parked events) and replay the whole log into it.

        Stop the runners of this projection first.
        """
        factory = load_runner_factory(app_spec)
        if factory is None:
            raise typer.BadParameter("rebuild needs --app module:attr (or $EPOCH_APP) to find the projection")
        show_bar = not as_json and sys.stdout.isatty()

        async def run() -> dict[str, Any]:
            async with cli_store(store, create=True) as opened:  # it writes: the read model, its checkpoint
                runner = _runner(*factory, opened)
                if name not in runner.names:
                    raise typer.BadParameter(f"no projection named {name!r} (known: {', '.join(runner.names)})")
                started = time.monotonic()
                done = 0
                if show_bar:
                    from rich.progress import Progress

                    total = await _count_all(runner, name)
                    with Progress() as progress:
                        task = progress.add_task(f"rebuilding {name}", total=total)

                        def advance(n: int) -> None:
                            nonlocal done
                            done += n
                            progress.update(task, completed=done)

                        await runner.rebuild(name, on_progress=advance)
                else:

                    def count(n: int) -> None:
                        nonlocal done
                        done += n

                    await runner.rebuild(name, on_progress=count)
                [after] = [s for s in await runner.status() if s.name == name]
                return {
                    "name": name,
                    "events": done,
                    "seconds": round(time.monotonic() - started, 3),
                    "checkpoint": after.checkpoint,
                    "parked": after.parked,
                }

        try:
            result = asyncio.run(run())
        except ProjectionFailed as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        if as_json:
            typer.echo(json.dumps(result))
        else:
            typer.echo(
                f"rebuilt {name}: {result['events']} events in {result['seconds']}s, checkpoint "
                f"{result['checkpoint']}, {result['parked']} parked"
            )


async def _count_all(runner: ProjectionRunner, name: str) -> int:
    # The whole log the projection reads (its categories), for the progress bar's total.
    categories = getattr(runner.projection(name), "categories", None)
    count = 0
    async for _ in runner.store.read_all(categories=categories):
        count += 1
    return count
