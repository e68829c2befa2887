"""``--app module:attr`` loading (epoch/_apps.py), shared by ``epoch projections`` and the explorer: the
same messages from both, ``$EPOCH_APP`` when no option is given, saved checkpoints without runners."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from epoch import ConfigurationError, ProjectionRunner, open_store
from epoch._apps import load_factories, load_factory, saved_status
from epoch.cli import app as cli
from epoch.examples.users.projections import runner
from epoch.projections import ProjectionStatus, SQLCheckpointStore, database_of
from epoch.stores.memory import MemoryEventStore

APP = "epoch.examples.users.projections:runner"

BAD_SPECS = [
    ("epoch.examples.users", "--app must look like module:attr, not 'epoch.examples.users'"),
    ("nope.nowhere:x", "cannot load 'nope.nowhere:x': No module named 'nope'"),
    (
        "epoch.examples.users.projections:nothing",
        "cannot load 'epoch.examples.users.projections:nothing': "
        "module 'epoch.examples.users.projections' has no attribute 'nothing'",
    ),
    ("epoch:__all__", "'epoch:__all__' is not a function (store) -> ProjectionRunner"),
    (":runner", "--app must look like module:attr, not ':runner'"),
    ("epoch.examples.users.projections:", "--app must look like module:attr, not 'epoch.examples.users.projections:'"),
    (
        "epoch.examples.users.projections:UserDirectory",
        "'epoch.examples.users.projections:UserDirectory' is not a function (store) -> ProjectionRunner: "
        "it does not take the store (too many positional arguments)",
    ),
    (
        "tests.test_apps:async_factory",
        "'tests.test_apps:async_factory' is async: --app needs a plain function (store) -> ProjectionRunner",
    ),
]
RAISING = "tests.test_apps:raising_factory"
RAISED = f"error: --app {RAISING!r} raised RuntimeError: no database today\n"


async def async_factory(store: object) -> ProjectionRunner:
    raise AssertionError("never called")  # pragma: no cover


def raising_factory(store: object) -> ProjectionRunner:
    raise RuntimeError("no database today")


def test_load_factory_imports_the_function() -> None:
    assert load_factory(APP) is runner


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_a_bad_spec_is_a_configuration_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_factory(spec)
    assert str(info.value) == message


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_the_cli_shows_the_same_message_as_a_usage_error(spec: str, message: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["projections", "status", "--store", f"sqlite:///{tmp_path}/e.db", "--app", spec])
    assert (done.exit_code, done.stdout) == (2, "")
    assert done.stderr == f"error: {message}\ntry 'epoch projections status --help'\n"


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_serve_shows_the_same_message_as_a_runtime_error(spec: str, message: str) -> None:
    done = CliRunner().invoke(cli, ["serve", "--store", "memory://", "--app", spec])
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", f"error: {message}\n")


@pytest.mark.parametrize(
    "args",
    [
        ["projections", "status", "--store", "memory://"],
        ["projections", "rebuild", "user-names", "--store", "memory://"],
        ["serve", "--store", "memory://"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_factory_that_raises_is_one_line_with_exit_1(args: list[str]) -> None:
    done = CliRunner().invoke(cli, [*args, "--app", RAISING])
    assert (done.exit_code, done.stdout, done.stderr) == (1, "", RAISED)


def test_serve_reports_what_a_factory_returned_before_it_listens() -> None:
    spec = "epoch.examples.users.domain:UserState"
    done = CliRunner().invoke(cli, ["serve", "--store", "memory://", "--app", spec])
    assert (done.exit_code, done.stdout) == (1, "")
    assert done.stderr == (
        f"error: --app {spec!r} returned UserState: expected a ProjectionRunner, SagaRunner, CommandHandler, "
        "an object with a .handler, or a list of these\n"
    )


def test_each_repeated_app_option_may_be_comma_separated() -> None:
    other = "epoch.examples.users.registry:name_claims_runner"
    assert [spec for spec, _ in load_factories([f"{APP}, {other}", APP])] == [APP, other, APP]


def test_load_factories_splits_and_reads_epoch_app(monkeypatch: pytest.MonkeyPatch) -> None:
    both = f"{APP}, epoch.examples.users.registry:name_claims_runner"
    loaded = load_factories(both + ",")
    assert [spec for spec, _ in loaded] == [APP, "epoch.examples.users.registry:name_claims_runner"]
    assert loaded[0][1] is runner
    assert [spec for spec, _ in load_factories([APP, " "])] == [APP]
    monkeypatch.setenv("EPOCH_APP", APP)
    assert [spec for spec, _ in load_factories(None)] == [APP]
    assert load_factories("") == []  # an empty option is no app, not $EPOCH_APP
    monkeypatch.delenv("EPOCH_APP")
    assert load_factories(None) == []


# The status tests run their own event loop, as `epoch projections status` does (asyncio.run).


def test_saved_status_without_runners_lists_saved_checkpoints(tmp_path: Path) -> None:
    async def check() -> None:
        async with open_store(f"sqlite:///{tmp_path}/e.db") as store:
            assert await saved_status(store, []) == []
            database = database_of(store)
            assert database is not None
            await SQLCheckpointStore(database).save("somewhere", 0)
            [saved] = await saved_status(store, [])
            assert (saved.name, saved.checkpoint, saved.head, saved.parked, saved.failing) == (
                "somewhere",
                0,
                0,
                0,
                False,
            )

    asyncio.run(check())


def test_saved_status_with_runners_is_theirs_in_order() -> None:
    async def check() -> None:
        async with MemoryEventStore() as store:
            users = runner(store)
            assert isinstance(users, ProjectionRunner)
            rows = await saved_status(store, [users, users])
            assert all(isinstance(row, ProjectionStatus) for row in rows)
            assert [row.name for row in rows] == ["user-names", "user-names"]

    asyncio.run(check())
