"""How the CLI opens stores: read-only commands never create one, and an unreachable server fails fast.

``open_store`` creates a SQLite file that does not exist (right for a program about to write) and gives a
PostgreSQL server its full pool timeout (10 s, retrying with a warning per attempt: right for a service
riding out a restart). At a prompt both are wrong: ``epoch streams --store sqlite:///tpyo.db`` would leave
an empty database behind, and a server that is down would print four warnings before one error. So the CLI
checks first: a missing SQLite file is "no such store" for a command that only reads, and PostgreSQL gets
one direct connection attempt with a short budget whose failure names the host and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import typer

from epoch import EventStore, open_store
from epoch._payload import escape_text
from epoch.errors import ConfigurationError, StoreUnavailable
from epoch.stores import DEFAULT_STORE_URL

__all__ = ["CONNECT_BUDGET", "check_store", "cli_store", "fail", "quiet_driver_logs", "resolve", "shown"]

CONNECT_BUDGET = 3.0
"""Seconds the CLI waits for a PostgreSQL server to accept a connection (``?pool_timeout=`` overrides it)."""


def resolve(url: str | None) -> str:
    """The store URL a command uses: ``--store``, else ``$EPOCH_STORE``, else the default SQLite file."""
    return url or os.environ.get("EPOCH_STORE") or DEFAULT_STORE_URL


def shown(url: str) -> str:
    """The URL as messages show it: a password (in the authority or as a query parameter) is masked."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port or bracket: show it as given, there is no password to find
        return url
    netloc = parts.netloc
    if password is not None:
        netloc = netloc.replace(f":{password}@", ":***@", 1)
    query = parts.query
    if any(key == "password" for key, _ in parse_qsl(query, keep_blank_values=True)):
        query = "&".join(
            "password=***" if key == "password" else part
            for part in query.split("&")
            for key in [part.partition("=")[0]]
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # as given: urlunsplit would turn sqlite:///epoch.db into sqlite:/epoch.db
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def fail(message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with status 1 (a runtime error)."""
    typer.echo(f"error: {escape_text(message)}", err=True)
    raise typer.Exit(1)


def quiet_driver_logs() -> None:
    """Keep psycopg's pool warnings ("error connecting in 'epoch': ...", several lines per retry) off the
    terminal: the CLI reports what failed as one line. Only when nobody configured logging for them."""
    driver = logging.getLogger("psycopg")
    if not driver.handlers and not logging.getLogger().handlers:
        driver.addHandler(logging.NullHandler())


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower().split("+", 1)[0]


async def check_store(url: str, *, create: bool) -> None:
    """Fail fast, before opening: a SQLite file a reading command would create, a PostgreSQL server that is down.

    ``create``: the command writes, so a missing SQLite file is created as usual.
    """
    scheme = _scheme(url)
    if scheme == "sqlite" and not create:
        from epoch.stores.sqlite import SQLiteEventStore

        path = SQLiteEventStore.path_of(url)
        if path != ":memory:" and not os.path.exists(path):
            raise ConfigurationError(f"no such store: {shown(url)}")
    elif scheme in ("postgresql", "postgres"):
        await _reach_postgres(url)


async def _reach_postgres(url: str) -> None:
    from epoch.stores.postgres import PostgresEventStore  # without psycopg: MissingDependency, naming the extra

    conninfo, options = PostgresEventStore.conninfo_of(url)
    import psycopg  # installed, then
    from psycopg.conninfo import conninfo_to_dict

    budget = float(options.get("pool_timeout", CONNECT_BUDGET))
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    where = f"{host}:{port}"
    try:
        # libpq's connect_timeout bounds each attempt; wait_for also bounds name resolution.
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(conninfo, connect_timeout=max(1, round(budget)), autocommit=True),
            budget + 1,
        )
    except TimeoutError:
        raise StoreUnavailable(f"cannot reach PostgreSQL at {where} (no answer within {budget:g} s)") from None
    except psycopg.Error as exc:
        reason = _reason(exc)
        if "timeout expired" in reason:  # libpq's words for connect_timeout
            reason = f"no answer within {budget:g} s"
        raise StoreUnavailable(f"cannot reach PostgreSQL at {where} ({reason})") from exc
    await conn.close()


def _reason(exc: BaseException) -> str:
    """libpq's reason, without its framing: 'connection failed: connection to server at "h", port 1 failed:
    Connection refused\\n\\tIs the server running ...' becomes 'connection refused'."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    reason = first.rpartition(" failed: ")[2].strip()
    reason = reason.removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:] if reason else type(exc).__name__


@contextlib.asynccontextmanager
async def cli_store(url: str | None, *, create: bool = False) -> AsyncIterator[EventStore]:
    """Open the store a command names, after :func:`check_store`; ``create`` for commands that write."""
    resolved = resolve(url)
    await check_store(resolved, create=create)
    async with open_store(resolved) as store:
        yield store
