"""Migration 5: ``epoch_snapshots``, one row per snapshot of a stream's state (issue 12, snapshots).

``first_visible`` is the stream's when the snapshot was taken: a load joins ``epoch_streams`` and finds only
snapshots whose ``first_visible`` is still the stream's, so a soft delete (or truncation) since hides them.
``xid``/``seq`` are the snapshot's event's place in the log (its position). No function is added or
redefined: the statements are in ``stores/postgres/snapshots.py``.
"""

from __future__ import annotations

__all__ = ["SQL"]

SQL = """
CREATE TABLE epoch_snapshots (
    stream         text        NOT NULL,
    schema_version bigint      NOT NULL,
    version        bigint      NOT NULL,
    xid            bigint      NOT NULL,
    seq            integer     NOT NULL,
    first_visible  bigint      NOT NULL,
    data           bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT epoch_snapshots_pkey PRIMARY KEY (stream, schema_version, version)
);
"""
