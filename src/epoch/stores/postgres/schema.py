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

Functions: ``epoch_append`` (guard check + insert + NOTIFY in one statement, one round trip),
``epoch_delete`` (soft delete), both through one guard, ``epoch_check_expected``, and
``epoch_lock_streams`` (for imports). Both take the stream's lock (a transaction-scoped advisory lock on
a 64-bit hash of its name, ``epoch_stream_lock_key``) before they write anything, so appends to one
stream are serialised (and ordered in the global log, see ``_V2``) while appends to different streams
run concurrently.
"""

from __future__ import annotations

from typing import Any

import psycopg

from epoch.errors import ConfigurationError
from epoch.stores.postgres.pool import driver_errors
from epoch.stores.postgres.sql import (
    CHANNEL,
    EXPECT_ANY,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    EXPECT_UNREACHABLE,
    OUT_OF_ORDER,
    WRONG_VERSION,
)
from epoch.stores.postgres.url import parse_url

__all__ = ["LATEST_VERSION", "MIGRATIONS", "apply_migrations", "migrate", "schema_version"]

# The version 1 guard, as released (two copies in the SQL it sent, one here); version 2 replaced both
# functions with calls to one guard, epoch_check_expected.
_V1_GUARD = f"""    v_actual := CASE WHEN v_version >= v_first THEN v_version END;
    IF (p_expected = {EXPECT_NO_STREAM} AND v_actual IS NOT NULL)
       OR (p_expected = {EXPECT_STREAM_EXISTS} AND v_actual IS NULL)
       OR (p_expected >= 0 AND v_actual IS DISTINCT FROM p_expected) THEN
        RAISE EXCEPTION 'epoch: wrong expected version' USING ERRCODE = '{WRONG_VERSION}', DETAIL = coalesce(v_actual::text, '');
    END IF;
"""

_V1 = f"""
CREATE TABLE epoch_streams (
    stream        text   PRIMARY KEY,
    version       bigint NOT NULL DEFAULT -1,
    first_visible bigint NOT NULL DEFAULT 0
);

CREATE TABLE epoch_events (
    xid         bigint      NOT NULL,
    seq         integer     NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    id          uuid        NOT NULL,
    type        text        NOT NULL,
    data        bytea       NOT NULL,
    metadata    bytea       NOT NULL,
    recorded_at timestamptz NOT NULL,
    category    text        GENERATED ALWAYS AS (split_part(stream, '-', 1)) STORED,
    CONSTRAINT epoch_events_pkey PRIMARY KEY (xid, seq),
    CONSTRAINT epoch_events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT epoch_events_id_key UNIQUE (id)
);

CREATE INDEX epoch_events_category_idx ON epoch_events (category, xid, seq);

CREATE FUNCTION epoch_append(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_data bytea[],
    p_metadata bytea[],
    p_recorded_at timestamptz[] DEFAULT NULL
) RETURNS TABLE (r_version bigint, r_xid bigint, r_seq integer, r_recorded_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n integer := coalesce(cardinality(p_ids), 0);
    v_version bigint;
    v_first bigint;
    v_actual bigint;
    v_xid bigint;
    v_seq integer;
    v_now timestamptz;
BEGIN
    -- 1. Lock the stream and move its version in one statement (creating its row for a new stream).
    --    A failed guard below raises, which undoes the update with the rest of the statement.
    IF v_n > 0 THEN
        LOOP
            UPDATE epoch_streams s SET version = s.version + v_n WHERE s.stream = p_stream
            RETURNING s.version - v_n, s.first_visible INTO v_version, v_first;
            EXIT WHEN FOUND;
            INSERT INTO epoch_streams (stream, version) VALUES (p_stream, v_n - 1)
            ON CONFLICT (stream) DO NOTHING RETURNING -1, 0 INTO v_version, v_first;
            EXIT WHEN FOUND;  -- else a concurrent append created it: update it then
        END LOOP;
    ELSE
        SELECT s.version, s.first_visible INTO v_version, v_first FROM epoch_streams s WHERE s.stream = p_stream;
        IF NOT FOUND THEN
            v_version := -1;
            v_first := 0;
        END IF;
    END IF;
    -- 2. The optimistic-concurrency guard. Ids already stored are not looked up here: the insert's
    --    unique index refuses them (23505), and on that or on a wrong version the caller looks the ids
    --    up once to tell an idempotent replay from DuplicateEventId. The fast path stays a few index
    --    probes whatever the table statistics say (a lookup planned on an empty table degrades).
{_V1_GUARD}    IF v_n = 0 THEN
        RETURN QUERY SELECT v_actual, e.xid, e.seq, e.recorded_at
            FROM epoch_events e WHERE e.stream = p_stream AND e.version = v_actual;
        RETURN;
    END IF;
    -- 3. Insert: position = (this transaction's id, ordinal inside the transaction). The next ordinal
    --    is kept in a transaction-local setting, so several appends in one transaction (imports,
    --    projections) continue it without reading the table.
    v_xid := pg_current_xact_id()::text::bigint;
    v_seq := coalesce(nullif(current_setting('epoch.next_seq', true), ''), '0')::integer;
    PERFORM set_config('epoch.next_seq', (v_seq + v_n)::text, true);
    v_now := clock_timestamp();
    INSERT INTO epoch_events (xid, seq, stream, version, id, type, data, metadata, recorded_at)
    SELECT v_xid, v_seq + (u.i - 1)::integer, p_stream, v_version + u.i, u.id, u.type, u.data, u.metadata,
           coalesce(u.at, v_now)
    FROM unnest(p_ids, p_types, p_data, p_metadata, p_recorded_at)
         WITH ORDINALITY AS u(id, type, data, metadata, at, i);
    PERFORM pg_notify('{CHANNEL}', split_part(p_stream, '-', 1));
    RETURN QUERY SELECT v_version + v_n, v_xid, v_seq, v_now;
END
$fn$;

CREATE FUNCTION epoch_delete(p_stream text, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
    v_actual bigint;
BEGIN
    SELECT s.version, s.first_visible INTO v_version, v_first
    FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
{_V1_GUARD}    IF v_actual IS NOT NULL THEN
        UPDATE epoch_streams SET first_visible = v_version + 1 WHERE stream = p_stream;
    END IF;
END
$fn$;
"""

# Version 2: per-stream order in the global log (guarantee 10), and one expected-version guard.
#
# A transaction gets its id (the first half of every position it writes) at its first write. In version 1
# that write was the UPDATE of the stream's row, so an appender took its id *before* it waited for that
# row's lock: a writer that queued behind another could hold a smaller id and still write the stream's
# next versions, which then sorted before the earlier ones in read_all. Now the stream's lock is a
# transaction-scoped advisory lock (which needs no transaction id) taken before anything is written, so
# the id is assigned only once every earlier writer of the stream has ended: it is greater than theirs.
# Appends to different streams still run concurrently (a lock per stream; a hash collision between two
# names only makes them wait for each other).
#
# A transaction that already has an id when it appends (several appends in one transaction, as an
# import does) could still sort before a younger writer of the stream: imports lock all their streams
# first (epoch_lock_streams), and epoch_append refuses, rather than reorders, when it finds the stream's
# last event written by a younger transaction (EP002).
_V2 = f"""
CREATE OR REPLACE FUNCTION epoch_stream_lock_key(p_stream text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT hashtextextended(p_stream, 0) $fn$;

CREATE OR REPLACE FUNCTION epoch_lock_streams(p_streams text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_key bigint;
BEGIN
    -- In one fixed order (by key), so that two transactions locking several streams never deadlock.
    FOR v_key IN SELECT DISTINCT epoch_stream_lock_key(s) FROM unnest(p_streams) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_check_expected(p_stream text, p_expected bigint, p_actual bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    -- p_expected: >= 0 a version, {EXPECT_ANY} ANY, {EXPECT_NO_STREAM} NO_STREAM, {EXPECT_STREAM_EXISTS} STREAM_EXISTS, {EXPECT_UNREACHABLE} a version no stream can
    -- reach (beyond 64 bits). p_actual: the stream's visible version, NULL when empty or deleted.
    IF (p_expected = {EXPECT_NO_STREAM} AND p_actual IS NOT NULL)
       OR (p_expected = {EXPECT_STREAM_EXISTS} AND p_actual IS NULL)
       OR p_expected = {EXPECT_UNREACHABLE}
       OR p_expected < {EXPECT_UNREACHABLE}
       OR (p_expected >= 0 AND p_actual IS DISTINCT FROM p_expected) THEN
        RAISE EXCEPTION 'epoch: % is at version %, not the expected one', p_stream, coalesce(p_actual::text, 'none')
            USING ERRCODE = '{WRONG_VERSION}', DETAIL = coalesce(p_actual::text, '');
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_append(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_data bytea[],
    p_metadata bytea[],
    p_recorded_at timestamptz[] DEFAULT NULL
) RETURNS TABLE (r_version bigint, r_xid bigint, r_seq integer, r_recorded_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n integer := coalesce(cardinality(p_ids), 0);
    v_had_xid boolean := pg_current_xact_id_if_assigned() IS NOT NULL;
    v_version bigint;
    v_first bigint;
    v_xid bigint;
    v_seq integer;
    v_now timestamptz;
BEGIN
    -- 1. The stream's lock, before any write: this transaction's id (its events' positions) is assigned
    --    below, after every earlier writer of the stream has ended (see migration 2).
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    -- 2. Move the stream's version in one statement (creating its row for a new stream). A failed guard
    --    below raises, which undoes the update with the rest of the statement.
    IF v_n > 0 THEN
        LOOP
            UPDATE epoch_streams s SET version = s.version + v_n WHERE s.stream = p_stream
            RETURNING s.version - v_n, s.first_visible INTO v_version, v_first;
            EXIT WHEN FOUND;
            INSERT INTO epoch_streams (stream, version) VALUES (p_stream, v_n - 1)
            ON CONFLICT (stream) DO NOTHING RETURNING -1, 0 INTO v_version, v_first;
            EXIT WHEN FOUND;  -- else a concurrent append created it: update it then
        END LOOP;
    ELSE
        SELECT s.version, s.first_visible INTO v_version, v_first FROM epoch_streams s WHERE s.stream = p_stream;
        IF NOT FOUND THEN
            v_version := -1;
            v_first := 0;
        END IF;
    END IF;
    -- 3. The optimistic-concurrency guard. Ids already stored are not looked up here: the insert's
    --    unique index refuses them (23505), and on that or on a wrong version the caller looks the ids
    --    up once to tell an idempotent replay from DuplicateEventId.
    PERFORM epoch_check_expected(p_stream, p_expected, CASE WHEN v_version >= v_first THEN v_version END);
    IF v_n = 0 THEN
        RETURN QUERY SELECT CASE WHEN v_version >= v_first THEN v_version END, e.xid, e.seq, e.recorded_at
            FROM epoch_events e WHERE e.stream = p_stream AND e.version = v_version AND v_version >= v_first;
        RETURN;
    END IF;
    v_xid := pg_current_xact_id()::text::bigint;
    IF v_had_xid AND v_version >= 0
       AND (SELECT e.xid FROM epoch_events e WHERE e.stream = p_stream AND e.version = v_version) > v_xid THEN
        RAISE EXCEPTION 'epoch: % was written by a transaction younger than this one: appending here would '
            'put its versions out of order in the global log', p_stream
            USING ERRCODE = '{OUT_OF_ORDER}',
                  HINT = 'append before any other write of the transaction, or lock its streams first (epoch_lock_streams)';
    END IF;
    -- 4. Insert: position = (this transaction's id, ordinal inside the transaction). The next ordinal
    --    is kept in a transaction-local setting, so several appends in one transaction continue it.
    v_seq := coalesce(nullif(current_setting('epoch.next_seq', true), ''), '0')::integer;
    PERFORM set_config('epoch.next_seq', (v_seq + v_n)::text, true);
    v_now := clock_timestamp();
    INSERT INTO epoch_events (xid, seq, stream, version, id, type, data, metadata, recorded_at)
    SELECT v_xid, v_seq + (u.i - 1)::integer, p_stream, v_version + u.i, u.id, u.type, u.data, u.metadata,
           coalesce(u.at, v_now)
    FROM unnest(p_ids, p_types, p_data, p_metadata, p_recorded_at)
         WITH ORDINALITY AS u(id, type, data, metadata, at, i);
    PERFORM pg_notify('{CHANNEL}', split_part(p_stream, '-', 1));
    RETURN QUERY SELECT v_version + v_n, v_xid, v_seq, v_now;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_delete(p_stream text, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    SELECT s.version, s.first_visible INTO v_version, v_first
    FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
    PERFORM epoch_check_expected(p_stream, p_expected, CASE WHEN v_version >= v_first THEN v_version END);
    IF v_version >= v_first THEN
        UPDATE epoch_streams SET first_visible = v_version + 1 WHERE stream = p_stream;
    END IF;
END
$fn$;
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "events, streams, epoch_append, epoch_delete", _V1),
    (2, "stream lock before the transaction id (per-stream order), one expected-version guard", _V2),
)
"""``(version, description, sql)``, applied in order; never edit a released one, add a new one."""

LATEST_VERSION = MIGRATIONS[-1][0]

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
