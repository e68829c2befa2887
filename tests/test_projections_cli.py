"""``epoch projections status|rebuild`` on a SQLite file, with projections found through --app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from epoch.examples.users import AddUser, UserService
from epoch.stores import open_store

APP = "epoch.examples.users.projections:runner"
ROOT = Path(__file__).resolve().parents[1]


def epoch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    return subprocess.run(
        [sys.executable, "-c", "from epoch.cli import main; main()", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_status_and_rebuild(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        for name in ("ada", "bob"):
            await UserService(store).add_user(AddUser(name))

    before = epoch("projections", "status", "--store", sqlite_url, "--app", APP, "--json")
    assert before.returncode == 0, before.stderr
    [row] = json.loads(before.stdout)
    assert (row["name"], row["checkpoint"], row["lag_events"], row["failing"]) == ("user-directory", 0, 2, False)

    rebuilt = epoch("projections", "rebuild", "user-directory", "--store", sqlite_url, "--app", APP)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt user-directory: 2 events" in rebuilt.stdout

    # Without --app: the checkpoints saved in the store's database.
    after = epoch("projections", "status", "--store", sqlite_url)
    assert after.returncode == 0, after.stderr
    assert "user-directory" in after.stdout and "lag 0 events" in after.stdout


def test_rebuild_needs_a_known_projection(sqlite_url: str) -> None:
    # The usage line names the program as the test runs it (python -c): only the error line is epoch's.
    no_app = epoch("projections", "rebuild", "user-directory", "--store", sqlite_url)
    assert (no_app.returncode, no_app.stderr.splitlines()[0]) == (
        2,
        "error: rebuild needs --app module:attr (or $EPOCH_APP) to find the projection",
    )
    unknown = epoch("projections", "rebuild", "nope", "--store", sqlite_url, "--app", APP, "--json")
    assert (unknown.returncode, unknown.stderr.splitlines()[0]) == (
        2,
        "error: no projection named 'nope' (known: user-directory)",
    )
