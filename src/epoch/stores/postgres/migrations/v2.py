"""Migration 2: the stream lock before the transaction id (per-stream order), one expected-version guard.
Released: never edit."""

from __future__ import annotations

from epoch.stores.postgres.sql import (
    CHANNEL,
    EXPECT_ANY,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    EXPECT_UNREACHABLE,
    OUT_OF_ORDER,
    WRONG_VERSION,
)

__all__ = ["SQL"]

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
SQL = f"""
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
