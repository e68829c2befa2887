"""How far ``read_all``/``subscribe`` trail the committed log on PostgreSQL (DESIGN §5's visibility lag)."""

from __future__ import annotations

import msgspec

from epoch.stores.postgres import sql as q
from epoch.stores.postgres.pool import Conn
from epoch.stores.postgres.sql import encode_position

__all__ = ["VisibilityLag", "measure_visibility_lag"]


class VisibilityLag(msgspec.Struct, frozen=True):
    """How far the visible head of the log trails what is committed (see :meth:`~epoch.stores.postgres.PostgresEventStore.visibility_lag`)."""

    visible_head: int
    """Position of the last event readers can see (0: none)."""
    committed_head: int
    """Position of the last committed event, visible or not."""
    pending_events: int
    """Committed events not yet visible because an older transaction is still open."""
    oldest_transaction_age: float | None
    """Seconds the oldest open transaction (with a transaction id) in the cluster has been running."""


async def measure_visibility_lag(conn: Conn) -> VisibilityLag:
    """The log's visible and committed heads, the events in between and the oldest open transaction."""
    visible = await (await conn.execute(q.VISIBLE_HEAD)).fetchone()
    newest = await (await conn.execute(q.NEWEST)).fetchone()
    pending = await (await conn.execute(q.PENDING_COUNT)).fetchone()
    age = await (await conn.execute(q.OLDEST_TRANSACTION_AGE)).fetchone()
    return VisibilityLag(
        visible_head=0 if visible is None else encode_position(*visible),
        committed_head=0 if newest is None else encode_position(*newest),
        pending_events=0 if pending is None else int(pending[0]),
        oldest_transaction_age=None if age is None or age[0] is None else float(age[0]),
    )
