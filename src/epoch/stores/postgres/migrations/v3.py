"""Migration 3: tags (dynamic consistency boundaries, issue 13): a ``tags`` column, the tag index
``epoch_event_tags``, a type index, the tag and type locks, and ``epoch_append_if``.

Storage. Each event's tags are kept twice: in ``epoch_events.tags`` (``text[]``, NULL when untagged: an
untagged row grows by one null bit), so every read returns them without a join; and one row per tag in
``epoch_event_tags(tag, xid, seq)``, whose primary key is the index ``read_query`` and the condition
check scan: one ordered range per tag, in log order, so a page (or the check's ``LIMIT 1``) reads only
the rows it returns. A GIN index on the column would find the same rows but unordered: every page would
collect and sort all of a tag's events. Type-only query items use ``epoch_events_type_idx
(type, xid, seq)`` the same way.

Locks (``append_with_condition`` without a store-wide lock). Every appender takes, after its stream's
lock, a *shared* transaction-scoped advisory lock on each distinct type and tag of its events; a
conditional append takes an *exclusive* one on each tag of its query (on the types of its type-only
items), all in one pass sorted by key (so no two of them deadlock), then reads. An appender of a
matching event either holds its shared lock already, and the check waits for it to commit, or waits for
the check's transaction to end: a matching event cannot slip in between the check and the append.
Shared locks do not wait for each other, so plain appends of one type or tag still run concurrently.
A query that matches every event (``Query.all()``) locks the table against inserts instead
(``SHARE ROW EXCLUSIVE``, after the advisory locks). The keys live in the 64-bit advisory key space of
the stream locks, hashed with other seeds (a collision only makes two writers wait for each other).

Visibility (DESIGN §5). The check reads the table as it is committed (each statement of a volatile
function in READ COMMITTED takes a new snapshot, after the locks were granted), not through the
readers' ``xid < xmin`` rule: an event committed by a transaction that readers cannot see yet still
fails the condition.
"""

from __future__ import annotations

from epoch.stores.postgres.sql import (
    CHANNEL,
    CONDITION_FAILED,
    OUT_OF_ORDER,
)

__all__ = ["SQL"]

SQL = f"""
ALTER TABLE epoch_events ADD COLUMN tags text[];

CREATE TABLE epoch_event_tags (
    tag  text    NOT NULL,
    xid  bigint  NOT NULL,
    seq  integer NOT NULL,
    CONSTRAINT epoch_event_tags_pkey PRIMARY KEY (tag, xid, seq)
);

CREATE INDEX epoch_events_type_idx ON epoch_events (type, xid, seq);

CREATE OR REPLACE FUNCTION epoch_tag_lock_key(p_tag text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT hashtextextended(p_tag, 1) $fn$;

CREATE OR REPLACE FUNCTION epoch_type_lock_key(p_type text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT hashtextextended(p_type, 2) $fn$;

CREATE OR REPLACE FUNCTION epoch_lock_keys(p_exclusive bigint[], p_shared bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_key bigint;
    v_exclusive boolean;
BEGIN
    -- One pass in key order (a key in both sets is taken exclusively), so that no two transactions
    -- taking these locks deadlock.
    FOR v_key, v_exclusive IN
        SELECT k, bool_or(x) FROM (
            SELECT unnest(p_exclusive) AS k, true AS x UNION ALL SELECT unnest(p_shared), false
        ) keys GROUP BY k ORDER BY k
    LOOP
        IF v_exclusive THEN
            PERFORM pg_advisory_xact_lock(v_key);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(v_key);
        END IF;
    END LOOP;
END
$fn$;

-- plpgsql, not sql: a SQL function that cannot be inlined is planned again on every call.
CREATE OR REPLACE FUNCTION epoch_event_keys(p_types text[], p_tags text[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    RETURN ARRAY(
        SELECT epoch_type_lock_key(t) FROM (SELECT DISTINCT t FROM unnest(p_types) t) types
        UNION SELECT epoch_tag_lock_key(t) FROM (SELECT DISTINCT t FROM unnest(p_tags) t) tags
    );
END
$fn$;

DROP FUNCTION epoch_append(text, bigint, uuid[], text[], bytea[], bytea[], timestamptz[]);

-- As migration 2's, with tags: p_tag_events[i] is the (1-based) index in the batch of the event that
-- carries p_tags[i]. New: step 1b (the type and tag locks) and the tags in step 4.
CREATE FUNCTION epoch_append(
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
    PERFORM pg_notify('{CHANNEL}', split_part(p_stream, '-', 1));
    RETURN QUERY SELECT v_version + v_n, v_xid, v_seq, v_now;
END
$fn$;

-- The first event after (p_after_xid, p_after_seq) matching the query, as committed now. p_query is a
-- JSON array of items {{"types": [...], "tags": [...]}}; an item with tags is found through the tag index
-- (its first tag's range, each row checked for the other tags and the types), one with types only
-- through the type index, one with neither is every event.
CREATE OR REPLACE FUNCTION epoch_first_match(p_query jsonb, p_after_xid bigint, p_after_seq bigint)
RETURNS TABLE (r_xid bigint, r_seq integer)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_item jsonb;
    v_types text[];
    v_tags text[];
    v_type text;
    v_xid bigint;
    v_seq integer;
    v_best_xid bigint;
    v_best_seq integer;
BEGIN
    FOR v_item IN SELECT jsonb_array_elements(p_query) LOOP
        v_types := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'types'));
        v_tags := ARRAY(SELECT jsonb_array_elements_text(v_item -> 'tags'));
        IF cardinality(v_tags) > 0 THEN
            -- LATERAL ... LIMIT 1: one probe of the primary key per row of the tag's range (never a
            -- join that reads the whole table), so the scan stops at the first match.
            SELECT t.xid, t.seq INTO v_xid, v_seq FROM epoch_event_tags t
                CROSS JOIN LATERAL (SELECT 1 FROM epoch_events e WHERE e.xid = t.xid AND e.seq = t.seq
                    AND e.tags @> v_tags AND (cardinality(v_types) = 0 OR e.type = ANY (v_types)) LIMIT 1) e
                WHERE t.tag = v_tags[1] AND (t.xid, t.seq) > (p_after_xid, p_after_seq)
                ORDER BY t.xid, t.seq LIMIT 1;
            IF FOUND AND (v_best_xid IS NULL OR (v_xid, v_seq) < (v_best_xid, v_best_seq)) THEN
                v_best_xid := v_xid;
                v_best_seq := v_seq;
            END IF;
        ELSIF cardinality(v_types) > 0 THEN
            FOREACH v_type IN ARRAY v_types LOOP
                SELECT e.xid, e.seq INTO v_xid, v_seq FROM epoch_events e
                    WHERE e.type = v_type AND (e.xid, e.seq) > (p_after_xid, p_after_seq)
                    ORDER BY e.xid, e.seq LIMIT 1;
                IF FOUND AND (v_best_xid IS NULL OR (v_xid, v_seq) < (v_best_xid, v_best_seq)) THEN
                    v_best_xid := v_xid;
                    v_best_seq := v_seq;
                END IF;
            END LOOP;
        ELSE
            SELECT e.xid, e.seq INTO v_xid, v_seq FROM epoch_events e
                WHERE (e.xid, e.seq) > (p_after_xid, p_after_seq) ORDER BY e.xid, e.seq LIMIT 1;
            IF FOUND AND (v_best_xid IS NULL OR (v_xid, v_seq) < (v_best_xid, v_best_seq)) THEN
                v_best_xid := v_xid;
                v_best_seq := v_seq;
            END IF;
        END IF;
    END LOOP;
    IF v_best_xid IS NOT NULL THEN
        RETURN QUERY SELECT v_best_xid, v_best_seq;
    END IF;
END
$fn$;

-- append_with_condition in one statement: the stream's lock, then the tag and type locks (exclusive on
-- the query's, shared on the batch's) in key order, the table lock for a query matching everything, the
-- guard, the condition, and the append (whose own locks are held already).
CREATE OR REPLACE FUNCTION epoch_append_if(
    p_stream text,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_data bytea[],
    p_metadata bytea[],
    p_tag_events integer[],
    p_tags text[],
    p_query jsonb,
    p_query_keys bigint[],
    p_everything boolean,
    p_after_xid bigint,
    p_after_seq bigint
) RETURNS TABLE (r_version bigint, r_xid bigint, r_seq integer, r_recorded_at timestamptz)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_version bigint;
    v_first bigint;
    v_xid bigint;
    v_seq integer;
BEGIN
    PERFORM pg_advisory_xact_lock(epoch_stream_lock_key(p_stream));
    PERFORM epoch_lock_keys(p_query_keys, epoch_event_keys(p_types, p_tags));
    IF p_everything THEN
        LOCK TABLE epoch_events IN SHARE ROW EXCLUSIVE MODE;
    END IF;
    -- The guard first (a wrong expected version wins over a failing condition, as on every store).
    SELECT s.version, s.first_visible INTO v_version, v_first FROM epoch_streams s WHERE s.stream = p_stream;
    PERFORM epoch_check_expected(p_stream, p_expected, CASE WHEN v_version >= v_first THEN v_version END);
    -- A new statement: a new snapshot, taken after every lock above was granted.
    SELECT m.r_xid, m.r_seq INTO v_xid, v_seq FROM epoch_first_match(p_query, p_after_xid, p_after_seq) m;
    IF FOUND THEN
        RAISE EXCEPTION 'epoch: % append condition failed', p_stream
            USING ERRCODE = '{CONDITION_FAILED}', DETAIL = v_xid::text || ':' || v_seq::text;
    END IF;
    RETURN QUERY SELECT * FROM epoch_append(p_stream, p_expected, p_ids, p_types, p_data, p_metadata, NULL,
                                            p_tag_events, p_tags);
END
$fn$;
"""
