"""Migration 7: ``NOTIFY`` only while someone listens (issue 11, the PostgreSQL write path).

A transaction that sent ``NOTIFY`` takes one global lock at commit and holds it through its commit's
WAL flush, so appenders that all notify commit one at a time, each waiting for its own fsync: 8 writers
on 8 connections ran at 2,300 appends/s with ``epoch_append``'s notify and 4,200/s without it (fsync on).
Subscribers now say that they listen: each store's LISTEN connection registers in ``epoch_listeners``
(``epoch_listen``), and ``epoch_append`` notifies only when that table has a row.

No wake-up is lost when a subscriber starts while appends are running. ``epoch_append`` reads the table
(taking ``ACCESS SHARE`` on it, held until its transaction ends) after its insert; ``epoch_listen``
locks the table ``ACCESS EXCLUSIVE`` before it inserts its row, so it waits for every appender that
read the table before (and found it empty) to commit, and an appender that reads it later sees the row
(the listener first tries ``NOWAIT``, which holds no appender back, then waits under a short
``lock_timeout``: ``listen.py``).
The listener LISTENs before it registers and wakes its subscriptions after, so they read what those
appenders wrote, and hear of every later append. (A caller's own ``REPEATABLE READ`` transaction that
appends reads the table in its first snapshot: if that is older than a registration, its commit may wake
that subscriber only at the safety poll, ``poll_interval``.)

A row whose session is gone (a process killed) is removed by the next ``epoch_listen``; until then it
only costs the appends their notify. ``UNLOGGED`` and without an index: the rows are sessions, which
end with a crash anyway, and an index would be one more relation lock per append.

Redefines ``epoch_append`` (migration 3's, with step 5 new); adds ``epoch_listeners`` and ``epoch_listen``.
"""

from __future__ import annotations

from epoch.stores.postgres.sql import CHANNEL, OUT_OF_ORDER

__all__ = ["SQL"]

SQL = f"""
CREATE UNLOGGED TABLE epoch_listeners (
    pid     integer     NOT NULL,
    started timestamptz NOT NULL
);

-- Register this session as a listener (its caller LISTENs first). The lock waits for the appenders that
-- found no listener to commit (they hold ACCESS SHARE on the table), and holds new ones back until the
-- row is committed: every append either commits before this returns or sees the row and notifies.
-- p_wait false: refuse at once (55P03) while any append holds the table, holding none back.
CREATE OR REPLACE FUNCTION epoch_listen(p_wait boolean) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_wait THEN
        LOCK TABLE epoch_listeners IN ACCESS EXCLUSIVE MODE;
    ELSE
        LOCK TABLE epoch_listeners IN ACCESS EXCLUSIVE MODE NOWAIT;
    END IF;
    -- Rows of sessions gone. Another role's backend_start reads as NULL without pg_read_all_stats: such
    -- a row stays (at worst one needless notify per append), never one of a session still listening.
    DELETE FROM epoch_listeners l WHERE NOT EXISTS (
        SELECT FROM pg_stat_activity a
        WHERE a.pid = l.pid AND (a.backend_start IS NULL OR a.backend_start = l.started)
    );
    INSERT INTO epoch_listeners (pid, started)
    SELECT a.pid, a.backend_start FROM pg_stat_activity a WHERE a.pid = pg_backend_pid();
END
$fn$;

-- Migration 3's, word for word but for step 5 (which was one unconditional pg_notify).
CREATE OR REPLACE FUNCTION epoch_append(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_data bytea[],
    p_metadata bytea[],
    p_recorded_at timestamptz[] DEFAULT NULL,
    p_tag_events integer[] DEFAULT NULL,
    p_tags text[] DEFAULT NULL
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
    v_key bigint;
BEGIN
    -- 1. The stream's lock, before any write: this transaction's id (its events' positions) is assigned
    --    below, after every earlier writer of the stream has ended (see migration 2).
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    -- 1b. Shared locks on the batch's types and tags, which a conditional append on them takes
    --    exclusively (migration 3). One event of no tag, the common case, takes one lock directly.
    IF v_n = 1 AND p_tags IS NULL THEN
        PERFORM pg_advisory_xact_lock_shared(epoch_type_lock_key(p_types[1]));
    ELSIF p_tags IS NULL THEN  -- untagged: the distinct types' keys, in key order, without a nested call
        FOR v_key IN SELECT epoch_type_lock_key(t) FROM (SELECT DISTINCT t FROM unnest(p_types) t) d ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock_shared(v_key);
        END LOOP;
    ELSE
        PERFORM epoch_lock_keys('{{}}', epoch_event_keys(p_types, p_tags));
    END IF;
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
    IF p_tags IS NULL THEN
        INSERT INTO epoch_events (xid, seq, stream, version, id, type, data, metadata, recorded_at)
        SELECT v_xid, v_seq + (u.i - 1)::integer, p_stream, v_version + u.i, u.id, u.type, u.data, u.metadata,
               coalesce(u.at, v_now)
        FROM unnest(p_ids, p_types, p_data, p_metadata, p_recorded_at)
             WITH ORDINALITY AS u(id, type, data, metadata, at, i);
    ELSE
        INSERT INTO epoch_events (xid, seq, stream, version, id, type, data, metadata, recorded_at, tags)
        SELECT v_xid, v_seq + (u.i - 1)::integer, p_stream, v_version + u.i, u.id, u.type, u.data, u.metadata,
               coalesce(u.at, v_now),
               (SELECT array_agg(t.tag ORDER BY t.o) FROM unnest(p_tag_events, p_tags) WITH ORDINALITY
                    AS t(event, tag, o) WHERE t.event = u.i)
        FROM unnest(p_ids, p_types, p_data, p_metadata, p_recorded_at)
             WITH ORDINALITY AS u(id, type, data, metadata, at, i);
        INSERT INTO epoch_event_tags (tag, xid, seq)
        SELECT t.tag, v_xid, v_seq + (t.event - 1)::integer FROM unnest(p_tag_events, p_tags) AS t(event, tag);
    END IF;
    -- 5 (migration 7). NOTIFY only while a subscriber listens: a notifying transaction takes one global
    --    lock at commit, held through its WAL flush, so notifying writers commit one at a time.
    IF EXISTS (SELECT FROM epoch_listeners) THEN
        PERFORM pg_notify('{CHANNEL}', split_part(p_stream, '-', 1));
    END IF;
    RETURN QUERY SELECT v_version + v_n, v_xid, v_seq, v_now;
END
$fn$;
"""
