"""What ``--app module:attr`` gives the explorer: projection runners and command handlers (deciders).

Each ``module:attr`` names a function (or class) called with the open store, as for
``epoch projections status --app``. It may return a :class:`~epoch.projections.ProjectionRunner`, a
:class:`~epoch.projections.sagas.SagaRunner`, a :class:`~epoch.CommandHandler`, an object with a
``handler`` attribute holding one (a service such as ``epoch.examples.users.service:UserService``), or a
list or tuple of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from epoch import CommandHandler, ConfigurationError, EventStore
from epoch._apps import Factory, call_factory, load_factories, saved_status
from epoch.projections import ProjectionRunner, ProjectionStatus
from epoch.projections.sagas import SagaRunner

__all__ = ["Registered", "load_factories", "register"]


@dataclass
class Registered:
    """The projections and deciders the explorer can show."""

    runners: list[ProjectionRunner | SagaRunner[Any, Any]] = field(default_factory=list)
    handlers: dict[str, CommandHandler[Any, Any, Any]] = field(default_factory=dict)

    async def status(self, store: EventStore) -> list[ProjectionStatus]:
        """Every registered projection's status; without any, every checkpoint saved in the store."""
        return await saved_status(store, self.runners)


def register(factories: list[tuple[str, Factory]], store: EventStore) -> Registered:
    """Call each factory with ``store`` and sort what it returns into runners and handlers."""
    registered = Registered()
    for spec, factory in factories:
        _collect(registered, spec, call_factory(spec, factory, store))
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
