"""``--app module:attr``: the application code ``epoch projections`` and the explorer load.

Each ``module:attr`` names a function (or class) that takes the open store and returns what the caller
shows: a :class:`~epoch.projections.ProjectionRunner` for ``epoch projections``; runners, sagas and
command handlers for the explorer. ``$EPOCH_APP`` is read here and nowhere else. Problems raise
:class:`~epoch.ConfigurationError`: ``epoch projections`` turns it into its one-line usage error (exit
status 2), ``epoch serve`` and the explorer report it as they report any ``EpochError``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from epoch.errors import ConfigurationError
from epoch.projections import (
    ProjectionRunner,
    ProjectionStatus,
    default_checkpoints,
    default_parking,
    projection_status,
)
from epoch.projections.sagas import SagaRunner
from epoch.stores import EventStore

__all__ = ["Factory", "call_factory", "env_app", "load_factories", "load_factory", "saved_status"]

Factory = Callable[[EventStore], object]


def env_app() -> str:
    """``$EPOCH_APP``, or ``""`` when it is not set."""
    return os.environ.get("EPOCH_APP", "")


def load_factory(spec: str) -> Factory:
    """Import the function ``spec`` (``module:attr``) names, from the current directory too."""
    module_name, _, attr = spec.partition(":")
    if not module_name.strip() or not attr.strip():
        raise ConfigurationError(f"--app must look like module:attr, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: modules of the current project are importable
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigurationError(f"{spec!r} is not a function (store) -> ProjectionRunner")
    if inspect.iscoroutinefunction(factory):  # (its coroutine would never be awaited)
        raise ConfigurationError(f"{spec!r} is async: --app needs a plain function (store) -> ProjectionRunner")
    try:
        inspect.signature(factory).bind(object())
    except TypeError as exc:
        raise ConfigurationError(
            f"{spec!r} is not a function (store) -> ProjectionRunner: it does not take the store ({exc})"
        ) from exc
    except ValueError:  # no signature to check (some builtins): calling it will tell
        pass
    loaded: Factory = factory
    return loaded


def call_factory(spec: str, factory: Factory, store: EventStore) -> object:
    """``factory(store)``; whatever it raises becomes one :class:`~epoch.ConfigurationError` naming ``spec``."""
    try:
        made = factory(store)
    except Exception as exc:  # the application's own code: any exception, reported as one line
        raise ConfigurationError(f"--app {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if inspect.isawaitable(made):
        if inspect.iscoroutine(made):
            made.close()  # (no "never awaited" warning)
        raise ConfigurationError(f"{spec!r} is async: --app needs a plain function (store) -> ProjectionRunner")
    return made


def load_factories(app_spec: str | Sequence[str] | None) -> list[tuple[str, Factory]]:
    """Import each ``module:attr`` (comma-separated or a sequence; ``$EPOCH_APP`` when none is given)."""
    if app_spec is None:
        app_spec = env_app()
    specs = [part for item in ([app_spec] if isinstance(app_spec, str) else app_spec) for part in item.split(",")]
    return [(spec, load_factory(spec)) for spec in (s.strip() for s in specs) if spec]


async def saved_status(
    store: EventStore, runners: Sequence[ProjectionRunner | SagaRunner[Any, Any]]
) -> list[ProjectionStatus]:
    """The status of each runner's projections, in order; without runners, of every checkpoint saved in
    the store (without per-projection filters, so their lag counts every event)."""
    if not runners:
        return await projection_status(store, default_checkpoints(store), default_parking(store))
    rows: list[ProjectionStatus] = []
    for runner in runners:
        if isinstance(runner, SagaRunner):
            rows.append(await runner.status())
        else:
            rows.extend(await runner.status())
    return rows
