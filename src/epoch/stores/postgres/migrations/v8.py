"""Migration 8: the erasure count and ``epoch_query_snapshots`` (DecisionHandler snapshots).

``epoch_erased.erasures`` counts the calls of ``epoch_erase`` that removed an event (hard deletes,
truncations, scavenges): a query snapshot records the count of the moment its state was read, and is
saved and loaded only while the count is unchanged (``stores/postgres/snapshots.py``; the reasoning is in
``stores/_query_snapshots.py``). ``epoch_erase`` is redefined (migration 4's, counting now); the row it
keeps still holds the highest erased position, which ``head_position`` reads.
"""

from __future__ import annotations

__all__ = ["SQL"]

SQL = """
ALTER TABLE epoch_erased ADD COLUMN erasures bigint NOT NULL DEFAULT 0;

CREATE TABLE epoch_query_snapshots (
    key            text        NOT NULL,
    schema_version bigint      NOT NULL,
    position       bigint      NOT NULL,
    folded         bigint      NOT NULL,
    version        bigint,
    data           bytea       NOT NULL,
    erasures       bigint      NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    label          text        NOT NULL,
    CONSTRAINT epoch_query_snapshots_pkey PRIMARY KEY (key, schema_version)
);

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
        -- The highest erased position (head_position never goes back), and one more erasure.
        INSERT INTO epoch_erased AS r (one, xid, seq, erasures) VALUES (0, v_xid, v_seq, 1)
        ON CONFLICT (one) DO UPDATE SET
            xid = CASE WHEN (r.xid, r.seq) < (excluded.xid, excluded.seq) THEN excluded.xid ELSE r.xid END,
            seq = CASE WHEN (r.xid, r.seq) < (excluded.xid, excluded.seq) THEN excluded.seq ELSE r.seq END,
            erasures = r.erasures + 1;
    END IF;
    RETURN v_n;
END
$fn$;
"""
