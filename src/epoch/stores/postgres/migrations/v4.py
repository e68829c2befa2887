"""Migration 4: stream lifecycle (DESIGN §8): tombstones, truncation, limits and scavenge.

Redefines ``epoch_check_expected`` (refuses a tombstoned stream) and ``epoch_delete`` (a no-op on a
tombstone); adds ``epoch_erase``, ``epoch_tombstone``, ``epoch_truncate``, ``epoch_set_limits``,
``epoch_scavenge`` and ``epoch_first_kept``; ``epoch_append`` is unchanged (it calls the guard).
"""

from __future__ import annotations

from epoch.stores._lifecycle import TOMBSTONE
from epoch.stores.postgres.sql import (
    EXPECT_ANY,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    EXPECT_UNREACHABLE,
    STREAM_DELETED,
    WRONG_VERSION,
)

__all__ = ["SQL"]

# A tombstone is first_visible = TOMBSTONE + version + 1 (epoch.stores._lifecycle): the stream reads as
# deleted through the `version >= first_visible` test every statement already makes, and the version it
# had travels in the error's DETAIL.
_REFUSE_TOMBSTONE = f"""RAISE EXCEPTION 'epoch: % is deleted for good (a tombstone)', p_stream
            USING ERRCODE = '{STREAM_DELETED}', DETAIL = (v_first - {TOMBSTONE} - 1)::text"""

SQL = f"""
ALTER TABLE epoch_streams ADD COLUMN max_count bigint, ADD COLUMN max_age interval;

-- The highest position an erasure removed: head_position never goes back.
CREATE TABLE epoch_erased (
    one  smallint PRIMARY KEY CHECK (one = 0),
    xid  bigint   NOT NULL,
    seq  integer  NOT NULL
);

CREATE OR REPLACE FUNCTION epoch_check_expected(p_stream text, p_expected bigint, p_actual bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_first bigint;
BEGIN
    -- A stream that reads as empty may be a tombstone, refused whatever the guard. Only then is its row
    -- read again: an append to a stream with events costs nothing more (migration 4).
    IF p_actual IS NULL THEN
        SELECT s.first_visible INTO v_first FROM epoch_streams s WHERE s.stream = p_stream;
        IF v_first >= {TOMBSTONE} THEN
            {_REFUSE_TOMBSTONE};
        END IF;
    END IF;
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

CREATE OR REPLACE FUNCTION epoch_delete(p_stream text, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    SELECT s.version, s.first_visible INTO v_version, v_first
    FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
    IF v_first >= {TOMBSTONE} THEN
        RETURN;  -- deleted for good already: a second delete is a no-op
    END IF;
    PERFORM epoch_check_expected(p_stream, p_expected, CASE WHEN v_version >= v_first THEN v_version END);
    IF v_version >= v_first THEN
        UPDATE epoch_streams SET first_visible = v_version + 1 WHERE stream = p_stream;
    END IF;
END
$fn$;

-- Delete the stream's events below p_below (the caller holds the stream's lock); how many.
CREATE OR REPLACE FUNCTION epoch_erase(p_stream text, p_below bigint) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n bigint;
    v_xid bigint;
    v_seq integer;
BEGIN
    -- The tag index holds the tags too (migration 3): erased with their events, through its key.
    WITH gone AS (
        DELETE FROM epoch_events e WHERE e.stream = p_stream AND e.version < p_below RETURNING e.xid, e.seq, e.tags
    ), untagged AS (
        DELETE FROM epoch_event_tags t USING (SELECT unnest(g.tags) AS tag, g.xid, g.seq FROM gone g) u
        WHERE t.tag = u.tag AND t.xid = u.xid AND t.seq = u.seq
    )
    SELECT count(*), (array_agg(g.xid ORDER BY g.xid DESC, g.seq DESC))[1],
           (array_agg(g.seq ORDER BY g.xid DESC, g.seq DESC))[1]
    INTO v_n, v_xid, v_seq FROM gone g;
    IF v_n > 0 THEN
        INSERT INTO epoch_erased AS r (one, xid, seq) VALUES (0, v_xid, v_seq)
        ON CONFLICT (one) DO UPDATE SET xid = excluded.xid, seq = excluded.seq
        WHERE (r.xid, r.seq) < (excluded.xid, excluded.seq);
    END IF;
    RETURN v_n;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_tombstone(p_stream text, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
    v_found boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    SELECT s.version, s.first_visible INTO v_version, v_first
    FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
    v_found := FOUND;
    IF v_first >= {TOMBSTONE} THEN
        RETURN;
    END IF;
    PERFORM epoch_check_expected(p_stream, p_expected, CASE WHEN v_version >= v_first THEN v_version END);
    IF v_found THEN
        PERFORM epoch_erase(p_stream, v_version + 1);
        UPDATE epoch_streams SET first_visible = {TOMBSTONE} + v_version + 1, max_count = NULL, max_age = NULL
        WHERE stream = p_stream;
    ELSE
        INSERT INTO epoch_streams (stream, version, first_visible) VALUES (p_stream, -1, {TOMBSTONE})
        ON CONFLICT (stream) DO NOTHING;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_truncate(p_stream text, p_version bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
    v_boundary bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    SELECT s.version, s.first_visible INTO v_version, v_first
    FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_first >= {TOMBSTONE} THEN
        {_REFUSE_TOMBSTONE};
    END IF;
    v_boundary := least(p_version, v_version + 1);  -- past the end: everything, and no more
    PERFORM epoch_erase(p_stream, v_boundary);
    IF v_boundary > v_first THEN
        UPDATE epoch_streams SET first_visible = v_boundary WHERE stream = p_stream;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION epoch_set_limits(p_stream text, p_max_count bigint, p_max_age interval) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_first bigint;
    v_found boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    SELECT s.first_visible INTO v_first FROM epoch_streams s WHERE s.stream = p_stream FOR UPDATE;
    v_found := FOUND;
    IF v_first >= {TOMBSTONE} THEN
        {_REFUSE_TOMBSTONE};
    END IF;
    IF v_found THEN
        UPDATE epoch_streams SET max_count = p_max_count, max_age = p_max_age WHERE stream = p_stream;
    ELSIF p_max_count IS NOT NULL OR p_max_age IS NOT NULL THEN
        INSERT INTO epoch_streams (stream, version, max_count, max_age) VALUES (p_stream, -1, p_max_count, p_max_age)
        ON CONFLICT (stream) DO UPDATE SET max_count = excluded.max_count, max_age = excluded.max_age;
    END IF;
END
$fn$;

-- Erase what the limits exclude, of one stream or of every limited one; how many events. Streams are
-- locked in the order of their lock keys, as epoch_lock_streams does, so no two lockers deadlock.
CREATE OR REPLACE FUNCTION epoch_scavenge(p_stream text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text;
    v_row epoch_streams%ROWTYPE;
    v_start bigint;
    v_oldest bigint;
    v_total bigint := 0;
BEGIN
    FOR v_name IN
        SELECT s.stream FROM epoch_streams s
        WHERE (s.max_count IS NOT NULL OR s.max_age IS NOT NULL) AND s.first_visible < {TOMBSTONE}
          AND (p_stream IS NULL OR s.stream = p_stream)
        ORDER BY epoch_stream_lock_key(s.stream), s.stream
    LOOP
        PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(v_name));
        SELECT * INTO v_row FROM epoch_streams s WHERE s.stream = v_name FOR UPDATE;
        CONTINUE WHEN v_row.first_visible >= {TOMBSTONE};
        v_start := greatest(v_row.first_visible, v_row.version - v_row.max_count + 1);
        IF v_row.max_age IS NOT NULL THEN
            SELECT min(e.version) INTO v_oldest FROM epoch_events e
            WHERE e.stream = v_name AND e.version >= v_start AND e.recorded_at >= clock_timestamp() - v_row.max_age;
            v_start := coalesce(v_oldest, v_row.version + 1);
        END IF;
        CONTINUE WHEN v_start <= v_row.first_visible;
        v_total := v_total + epoch_erase(v_name, v_start);
        UPDATE epoch_streams SET first_visible = v_start WHERE stream = v_name;
    END LOOP;
    RETURN v_total;
END
$fn$;

-- Called by a cached CommandHandler's append on each row epoch_append returned (so after it, under the
-- stream's lock it took): refuses, through the one guard, when the stream's first_visible moved past
-- p_first (the events the handler folded were erased meanwhile); the raise undoes the append.
-- p_version - p_count is the stream's version before the append: the actual one reported.
CREATE OR REPLACE FUNCTION epoch_first_kept(p_version bigint, p_stream text, p_first bigint, p_count integer)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_first bigint;
BEGIN
    SELECT s.first_visible INTO v_first FROM epoch_streams s WHERE s.stream = p_stream;
    IF v_first > p_first AND v_first < {TOMBSTONE} THEN
        PERFORM epoch_check_expected(
            p_stream, {EXPECT_UNREACHABLE}, CASE WHEN p_version - p_count >= v_first THEN p_version - p_count END
        );
    END IF;
    RETURN true;
END
$fn$;
"""
