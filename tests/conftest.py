"""Shared fixtures: one ``store_url`` case per backend, and throwaway PostgreSQL databases.

PostgreSQL comes from ``EPOCH_TEST_PG_DSN`` (scripts/test starts a private cluster) or, when that is
unset, from a cluster this session starts itself. With ``EPOCH_REQUIRE_POSTGRES=1`` (``make test``, CI)
a missing server fails the run instead of skipping.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from epoch.stores import EventStore, open_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_postgres(reason: str) -> None:
    if os.environ.get("EPOCH_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of an admin connection to a throwaway PostgreSQL server."""
    if dsn := os.environ.get("EPOCH_TEST_PG_DSN"):
        yield dsn
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        _no_postgres("no PostgreSQL binaries (apt-get install postgresql)")
    pgbin = bins[-1]
    root = tempfile.mkdtemp(prefix="epoch-pg.")  # not tmp_path: its parents are 0700 and root-owned
    run: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        run = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = f"{root}/data"
    subprocess.run(
        [
            *run,
            f"{pgbin}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    subprocess.run(
        [*run, f"{pgbin}/pg_ctl", "-D", data, "-l", f"{root}/server.log", "-w", "-t", "30", "-o", opts, "start"],
        check=True,
        capture_output=True,
    )
    os.environ["EPOCH_TEST_PG_DATA"] = data
    os.environ["EPOCH_TEST_PG_BIN"] = pgbin
    os.environ["EPOCH_TEST_PG_RUN"] = " ".join(run)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run, f"{pgbin}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_dsn: str) -> str:
    """A fresh, empty database on the server; returns its DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return server_dsn.rsplit("/", 1)[0] + "/" + name


def drop_database(server_dsn: str, dsn: str) -> None:
    import psycopg

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database per test."""
    dsn = create_database(pg_server_dsn)
    yield dsn
    drop_database(pg_server_dsn, dsn)


@pytest.fixture
def other_pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A second fresh database on the same server."""
    dsn = create_database(pg_server_dsn)
    yield dsn
    drop_database(pg_server_dsn, dsn)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL naming a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'epoch.db'}"


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming a fresh, empty store of ``backend``."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'epoch.db'}"
    return str(request.getfixturevalue("pg_dsn"))


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
BACKENDS = ["memory", "sqlite", POSTGRES]
"""Every backend a test runs on; tests reach them through ``store_url`` (or ``sql_store_url``)."""
SQL_BACKENDS = ["sqlite", POSTGRES]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming a fresh, empty store: one case per backend."""
    return url_for(request.param, request, tmp_path)


@pytest.fixture(params=SQL_BACKENDS)
def sql_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL naming a fresh, empty store in a SQL database (for exactly-once projections)."""
    return url_for(request.param, request, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    """An open, empty store: one case per backend."""
    async with open_store(store_url) as opened:
        yield opened


# Hypothesis profiles (short in `make test`, long under `make fuzz`) are registered where the hostile
# strategies live, so every fuzz test runs with the same budget.
import tests.hostile  # noqa: E402,F401
