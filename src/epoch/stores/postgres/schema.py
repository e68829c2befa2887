"""The PostgreSQL schema: versioned, idempotent migrations, applied under an advisory lock.

Tables (all prefixed ``epoch_``)::

    epoch_schema_version(version PK, description, applied_at)      one row per applied migration
    epoch_streams(stream PK, version, first_visible)                one row per stream: its last version
                                                                    (-1: none) and the first version not
                                                                    soft-deleted
    epoch_events(xid, seq, stream, version, id, type, data, metadata, recorded_at, category)
        PK (xid, seq)            read_all / subscribe order, and the position (see sql.py)
        UNIQUE (stream, version) read_stream, dense versions
        UNIQUE (id)              idempotent writes, get_event
        INDEX (category, xid, seq)  read_all / subscribe by category

Functions: ``epoch_append`` (guard check + insert + NOTIFY while a subscription listens, in one round trip),
``epoch_delete`` (soft delete), both through one guard, ``epoch_check_expected``, and
``epoch_lock_streams`` (for imports). Both take the stream's lock (a transaction-scoped advisory lock on
a 64-bit hash of its name, ``epoch_stream_lock_key``) before they write anything, so appends to one
stream are serialised (and ordered in the global log, see ``migrations/v2.py``) while appends to different streams
run concurrently.
"""

from __future__ import annotations

from typing import Any

import psycopg

from epoch.errors import ConfigurationError
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.migrations import LATEST_VERSION, MIGRATIONS
from epoch.stores.postgres.pool import driver_errors
from epoch.stores.postgres.url import parse_url

__all__ = ["LATEST_VERSION", "MIGRATIONS", "apply_migrations", "check_schema", "migrate", "schema_version"]

_LOCK_KEY = 0x65706F6368  # "epoch": serialises concurrent migrators

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS epoch_schema_version (
    version     integer     PRIMARY KEY,
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: Any) -> int:
    """The newest applied migration (0 when none). ``conn`` is an autocommit ``AsyncConnection``."""
    cur = await conn.execute("SELECT to_regclass('epoch_schema_version') IS NOT NULL", prepare=False)
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM epoch_schema_version", prepare=False)
    row = await cur.fetchone()
    return int(row[0])


async def apply_migrations(conn: Any) -> list[tuple[int, str]]:
    """Apply the missing migrations in one transaction; return what was applied (empty: up to date).

    Idempotent and safe to run from several processes at once (an advisory lock serialises them).
    """
    applied: list[tuple[int, str]] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_VERSION_TABLE)
        row = await (await conn.execute("SELECT coalesce(max(version), 0) FROM epoch_schema_version")).fetchone()
        current = int(row[0])
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            await conn.execute(sql, prepare=False)
            await conn.execute(
                "INSERT INTO epoch_schema_version (version, description) VALUES (%s, %s)", (version, description)
            )
            applied.append((version, description))
    return applied


async def migrate(url: str) -> tuple[int, int, list[tuple[int, str]]]:
    """Create or upgrade the schema the URL's database holds: ``(version before, version after, applied)``.

    What ``epoch migrate`` runs. Idempotent, and safe to run from several processes at once.
    """
    conninfo, _ = parse_url(url)
    with driver_errors():
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            before = await schema_version(conn)
            if before > LATEST_VERSION:
                raise ConfigurationError(
                    f"the epoch schema is at version {before}, newer than this epoch ({LATEST_VERSION}): upgrade epoch"
                )
            applied = await apply_migrations(conn)
            return before, await schema_version(conn), applied


async def check_schema(conn: Any, migrate: bool) -> None:
    """On open: a UTF8 database whose schema is current (upgraded first when ``migrate``) and whose
    transaction ids are this cluster's. Raises ``ConfigurationError``. (Moved from the store's module.)"""
    row = await (await conn.execute(q.SERVER_ENCODING, prepare=False)).fetchone()
    if row is None or row[0] != "UTF8":
        raise ConfigurationError(f"the database encoding must be UTF8, not {row and row[0]!r}")
    version = await schema_version(conn)
    if version < LATEST_VERSION:
        if not migrate:
            raise ConfigurationError(
                f"the epoch schema is at version {version}, {LATEST_VERSION} is needed: "
                "run `epoch migrate --store URL` (or open without ?migrate=false)"
            )
        await apply_migrations(conn)
    elif version > LATEST_VERSION:
        raise ConfigurationError(
            f"the epoch schema is at version {version}, newer than this epoch ({LATEST_VERSION}): upgrade epoch"
        )
    newest = await (await conn.execute(q.NEWEST, prepare=False)).fetchone()
    xmax = await (await conn.execute(q.XMAX, prepare=False)).fetchone()
    if newest is not None and xmax is not None and newest[0] >= xmax[0]:
        raise ConfigurationError(
            "epoch_events holds transaction ids newer than this server's: it was restored from a dump "
            "into another cluster, so new positions would sort before old ones; use `epoch copy` instead"
        )
