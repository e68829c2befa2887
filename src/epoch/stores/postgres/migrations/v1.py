"""Migration 1 (0.1.0): events, streams, ``epoch_append`` and ``epoch_delete``. Released: never edit."""

from __future__ import annotations

from epoch.stores.postgres.sql import (
    CHANNEL,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    WRONG_VERSION,
)

__all__ = ["SQL"]

# The version 1 guard, as released (two copies in the SQL it sent, one here); version 2 replaced both
# functions with calls to one guard, epoch_check_expected.
_V1_GUARD = f"""    v_actual := CASE WHEN v_version >= v_first THEN v_version END;
    IF (p_expected = {EXPECT_NO_STREAM} AND v_actual IS NOT NULL)
       OR (p_expected = {EXPECT_STREAM_EXISTS} AND v_actual IS NULL)
       OR (p_expected >= 0 AND v_actual IS DISTINCT FROM p_expected) THEN
        RAISE EXCEPTION 'epoch: wrong expected version' USING ERRCODE = '{WRONG_VERSION}', DETAIL = coalesce(v_actual::text, '');
    END IF;
"""

SQL = f"""
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
