"""Migration 9: ``head_position`` never goes back, also when an erasure takes the visible head along with
a newer event not visible yet (a transaction older than it still open).

``epoch_erased`` kept only the highest erased position, which ``head_position`` may count only once it is
visible; the visible head erased with it was remembered nowhere, so the head fell back (to 0 on a store
of one stream). ``epoch_erase`` now also keeps the highest erased position that every transaction could
already see (below its own snapshot's xmin): ``head_position`` counts it at once
(``stores/postgres/sql.py``, ``HEAD_POSITION``).
"""

from __future__ import annotations

__all__ = ["SQL"]

SQL = """
ALTER TABLE epoch_erased ADD COLUMN seen_xid bigint, ADD COLUMN seen_seq integer;
-- What was erased before: counted at once only where every transaction can see it already.
UPDATE epoch_erased SET seen_xid = xid, seen_seq = seq WHERE xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint;

-- Delete the stream's events below p_below (the caller holds the stream's lock); how many.
CREATE OR REPLACE FUNCTION epoch_erase(p_stream text, p_below bigint) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n bigint;
    v_xid bigint;
    v_seq integer;
    v_seen_xid bigint;
    v_seen_seq integer;
    v_xmin bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
BEGIN
    -- The tag index holds the tags too (migration 3): erased with their events, through its key.
    WITH gone AS (
        DELETE FROM epoch_events e WHERE e.stream = p_stream AND e.version < p_below RETURNING e.xid, e.seq, e.tags
    ), untagged AS (
        DELETE FROM epoch_event_tags t USING (SELECT unnest(g.tags) AS tag, g.xid, g.seq FROM gone g) u
        WHERE t.tag = u.tag AND t.xid = u.xid AND t.seq = u.seq
    )
    SELECT count(*), (array_agg(g.xid ORDER BY g.xid DESC, g.seq DESC))[1],
           (array_agg(g.seq ORDER BY g.xid DESC, g.seq DESC))[1],
           (array_agg(g.xid ORDER BY g.xid DESC, g.seq DESC) FILTER (WHERE g.xid < v_xmin))[1],
           (array_agg(g.seq ORDER BY g.xid DESC, g.seq DESC) FILTER (WHERE g.xid < v_xmin))[1]
    INTO v_n, v_xid, v_seq, v_seen_xid, v_seen_seq FROM gone g;
    IF v_n > 0 THEN
        -- The highest erased position, the highest one every transaction could see already (below this
        -- transaction's xmin: head_position never goes back, also while the other is not visible yet),
        -- and one more erasure.
        INSERT INTO epoch_erased AS r (one, xid, seq, seen_xid, seen_seq, erasures)
        VALUES (0, v_xid, v_seq, v_seen_xid, v_seen_seq, 1)
        ON CONFLICT (one) DO UPDATE SET
            xid = CASE WHEN (r.xid, r.seq) < (excluded.xid, excluded.seq) THEN excluded.xid ELSE r.xid END,
            seq = CASE WHEN (r.xid, r.seq) < (excluded.xid, excluded.seq) THEN excluded.seq ELSE r.seq END,
            seen_xid = CASE WHEN excluded.seen_xid IS NOT NULL AND (r.seen_xid IS NULL
                OR (r.seen_xid, r.seen_seq) < (excluded.seen_xid, excluded.seen_seq)) THEN excluded.seen_xid
                ELSE r.seen_xid END,
            seen_seq = CASE WHEN excluded.seen_xid IS NOT NULL AND (r.seen_xid IS NULL
                OR (r.seen_xid, r.seen_seq) < (excluded.seen_xid, excluded.seen_seq)) THEN excluded.seen_seq
                ELSE r.seen_seq END,
            erasures = r.erasures + 1;
    END IF;
    RETURN v_n;
END
$fn$;
"""
