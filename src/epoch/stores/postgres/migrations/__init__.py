"""The PostgreSQL schema's migrations, one module each, applied in order by :mod:`..schema`.

Never edit a released migration; add a module ``vN.py`` with its ``SQL`` and one line to ``MIGRATIONS``.
"""

from __future__ import annotations

from epoch.stores.postgres.migrations import v1, v2, v3, v4, v5, v6, v7, v8, v9

__all__ = ["LATEST_VERSION", "MIGRATIONS"]

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "events, streams, epoch_append, epoch_delete", v1.SQL),
    (2, "stream lock before the transaction id (per-stream order), one expected-version guard", v2.SQL),
    (3, "tags: epoch_events.tags, epoch_event_tags, the type index, tag and type locks, epoch_append_if", v3.SQL),
    (4, "stream lifecycle: tombstones, truncation, limits, scavenge", v4.SQL),
    (5, "snapshots", v5.SQL),
    (6, "epoch_keys, epoch_key_changes: personal-data keys", v6.SQL),
    (7, "NOTIFY only while someone listens: epoch_listeners, epoch_listen, epoch_append", v7.SQL),
    (8, "the erasure count and epoch_query_snapshots (DecisionHandler snapshots)", v8.SQL),
    (9, "head_position never goes back: epoch_erased keeps the highest erased position already visible", v9.SQL),
)
"""``(version, description, sql)``, in version order."""

LATEST_VERSION = MIGRATIONS[-1][0]
