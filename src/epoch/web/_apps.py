"""What ``--app module:attr`` gives the explorer: projection runners and command handlers (deciders).

Each ``module:attr`` names a function (or class) called with the open store, as for
``epoch projections status --app``. It may return a :class:`~epoch.projections.ProjectionRunner`, a
:class:`~epoch.projections.sagas.SagaRunner`, a :class:`~epoch.CommandHandler`, an object with a
``handler`` attribute holding one (a service such as ``epoch.examples.users.service:UserService``), or a
list or tuple of these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer

from epoch import CommandHandler, ConfigurationError, EventStore
from epoch.cli.projections import load_runner_factory
from epoch.projections import (
    ProjectionRunner,
    ProjectionStatus,
    default_checkpoints,
    default_parking,
    projection_status,
)
from epoch.projections.sagas import SagaRunner

__all__ = ["Registered", "load_factories", "register"]

Factory = Callable[[EventStore], object]


def load_factories(app_spec: str | Sequence[str] | None) -> list[tuple[str, Factory]]:
    """Import each ``module:attr`` (comma-separated or a sequence; ``$EPOCH_APP`` when none is given)."""
    if app_spec is None:
        app_spec = os.environ.get("EPOCH_APP", "")
    specs = app_spec.split(",") if isinstance(app_spec, str) else list(app_spec)
    factories = []
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        try:
            factory = load_runner_factory(spec)
        except typer.BadParameter as exc:
            raise ConfigurationError(exc.message) from exc
        factories.append((spec, factory))
    return factories


@dataclass
class Registered:
    """The projections and deciders the explorer can show."""

    runners: list[ProjectionRunner | SagaRunner[Any, Any]] = field(default_factory=list)
    handlers: dict[str, CommandHandler[Any, Any, Any]] = field(default_factory=dict)

    async def status(self, store: EventStore) -> list[ProjectionStatus]:
        """Every registered projection's status; without any, every checkpoint saved in the store."""
        if not self.runners:
            return await projection_status(store, default_checkpoints(store), default_parking(store))
        rows: list[ProjectionStatus] = []
        for runner in self.runners:
            if isinstance(runner, SagaRunner):
                rows.append(await runner.status())
            else:
                rows.extend(await runner.status())
        return rows


def register(factories: list[tuple[str, Factory]], store: EventStore) -> Registered:
    """Call each factory with ``store`` and sort what it returns into runners and handlers."""
    registered = Registered()
    for spec, factory in factories:
        _collect(registered, spec, factory(store))
    return registered


def _collect(registered: Registered, spec: str, value: object) -> None:
    if isinstance(value, ProjectionRunner | SagaRunner):
        registered.runners.append(value)
    elif isinstance(value, CommandHandler):
        registered.handlers[value.category] = value
    elif isinstance(getattr(value, "handler", None), CommandHandler):
        _collect(registered, spec, getattr(value, "handler"))  # noqa: B009 - the attribute is duck-typed
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(registered, spec, item)
    else:
        raise ConfigurationError(
            f"--app {spec!r} returned {type(value).__name__}: expected a ProjectionRunner, SagaRunner, "
            "CommandHandler, an object with a .handler, or a list of these"
        )
