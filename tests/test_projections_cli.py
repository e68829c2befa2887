"""``epoch projections status|rebuild`` on a SQLite file, with projections found through --app."""

from __future__ import annotations

import asyncio
import json

from examples.users import AddUser, UserService
from typer.testing import CliRunner

from epoch.cli import app
from epoch.stores import open_store

APP = "examples.users.projections:runner"


def _add(url: str, *names: str) -> None:
    async def run() -> None:
        async with open_store(url) as store:
            for name in names:
                await UserService(store).add_user(AddUser(name))

    asyncio.run(run())


def test_status_and_rebuild(sqlite_url: str) -> None:
    _add(sqlite_url, "ada", "bob")
    cli = CliRunner()
    before = cli.invoke(app, ["projections", "status", "--store", sqlite_url, "--app", APP, "--json"])
    assert before.exit_code == 0, before.output
    [row] = json.loads(before.output)
    assert (row["name"], row["checkpoint"], row["lag_events"], row["failing"]) == ("user-directory", 0, 2, False)

    rebuilt = cli.invoke(app, ["projections", "rebuild", "user-directory", "--store", sqlite_url, "--app", APP])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt user-directory: 2 events" in rebuilt.output

    # Without --app: the checkpoints saved in the store's database.
    after = cli.invoke(app, ["projections", "status", "--store", sqlite_url])
    assert after.exit_code == 0, after.output
    assert "user-directory" in after.output and "lag 0 events" in after.output


def test_rebuild_needs_a_known_projection(sqlite_url: str) -> None:
    cli = CliRunner()
    missing = cli.invoke(app, ["projections", "rebuild", "user-directory", "--store", sqlite_url])
    assert missing.exit_code != 0
    unknown = cli.invoke(app, ["projections", "rebuild", "nope", "--store", sqlite_url, "--app", APP, "--json"])
    assert unknown.exit_code != 0
