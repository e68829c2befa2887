"""The statements the PostgreSQL store runs (all static, so psycopg prepares them once per connection).

Positions: ``position = xid << 32 | seq`` where ``xid`` is the 64-bit id of the writing transaction
(``pg_current_xact_id()``) and ``seq`` the event's ordinal inside that transaction. Readers see only rows
whose transaction is older than the oldest one still running (``xid < pg_snapshot_xmin(...)``): those
transactions have all ended, so no event can later appear before what was already read.
"""

from __future__ import annotations

from typing import LiteralString

SEQ_BITS = 32
SEQ_MASK = (1 << SEQ_BITS) - 1


def encode_position(xid: int, seq: int) -> int:
    """The public position of the ``seq``-th event written by transaction ``xid``."""
    return (xid << SEQ_BITS) | seq


def decode_position(position: int) -> tuple[int, int]:
    """``(xid, seq)`` of a position (``after=0`` decodes to ``(0, 0)``, before every event)."""
    return position >> SEQ_BITS, position & SEQ_MASK


XMIN = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"

# The event arrays travel in binary (%b): text format would hex-escape every byte of data and metadata.
APPEND = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, %s, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[])"
)
IMPORT = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, -1, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::timestamptz[])"
)
LOCK_STREAMS = "SELECT epoch_lock_streams(%s::text[])"
SET_FIRST_VISIBLE = "UPDATE epoch_streams SET first_visible = greatest(first_visible, %s) WHERE stream = %s"
DELETE = "SELECT epoch_delete(%s, %s)"

FOUND_IDS = "SELECT id, stream, version, xid, seq, recorded_at FROM epoch_events WHERE id = ANY (%s::uuid[])"

_STREAM_COLS = "e.version, e.xid, e.seq, e.id, e.type, e.data, e.metadata, e.recorded_at"
_FIRST_VISIBLE = "(SELECT s.first_visible FROM epoch_streams s WHERE s.stream = %(stream)s)"

READ_STREAM_FORWARD = (
    f"SELECT {_STREAM_COLS} FROM epoch_events e WHERE e.stream = %(stream)s"
    f" AND e.version >= greatest(%(from)s::bigint, {_FIRST_VISIBLE}) ORDER BY e.version LIMIT %(limit)s"
)
READ_STREAM_BACKWARD = (
    f"SELECT {_STREAM_COLS} FROM epoch_events e WHERE e.stream = %(stream)s"
    f" AND e.version <= %(from)s::bigint AND e.version >= coalesce({_FIRST_VISIBLE}, 0)"
    " ORDER BY e.version DESC LIMIT %(limit)s"
)

_ALL_COLS = "e.stream, e.version, e.xid, e.seq, e.id, e.type, e.data, e.metadata, e.recorded_at"
_AFTER = "(e.xid, e.seq) > (%(xid)s::bigint, %(seq)s::bigint)"

READ_ALL = (
    f"SELECT {_ALL_COLS} FROM epoch_events e WHERE {_AFTER} AND e.xid < {XMIN} ORDER BY e.xid, e.seq LIMIT %(limit)s"
)


MAX_UNION_CATEGORIES = 8


def read_categories(count: int) -> LiteralString:
    """``read_all`` for ``count`` categories (``%(c0)s``, ``%(c1)s``, ...).

    Up to :data:`MAX_UNION_CATEGORIES`: one range scan of the category index each, merged in order.
    More: one scan of the global order with a filter (``%(categories)s``).
    """
    if count > MAX_UNION_CATEGORIES:
        return (
            f"SELECT {_ALL_COLS} FROM epoch_events e WHERE e.category = ANY (%(categories)s::text[]) AND {_AFTER}"
            f" AND e.xid < {XMIN} ORDER BY e.xid, e.seq LIMIT %(limit)s"
        )
    branches = [
        f"(SELECT {_ALL_COLS} FROM epoch_events e WHERE e.category = %({name})s AND {_AFTER}"
        f" AND e.xid < {XMIN} ORDER BY e.xid, e.seq LIMIT %(limit)s)"
        for name in _CATEGORY_PARAMS[:count]
    ]
    if count == 1:
        return branches[0][1:-1]
    union = " UNION ALL ".join(branches)
    return f"SELECT * FROM ({union}) u ORDER BY u.xid, u.seq LIMIT %(limit)s"


_CATEGORY_PARAMS: tuple[LiteralString, ...] = ("c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7")

NEWEST_AND_XMIN = f"SELECT (SELECT e.xid FROM epoch_events e ORDER BY e.xid DESC, e.seq DESC LIMIT 1), {XMIN}"
XMIN_ONLY = f"SELECT {XMIN}"
VISIBLE_HEAD = f"SELECT e.xid, e.seq FROM epoch_events e WHERE e.xid < {XMIN} ORDER BY e.xid DESC, e.seq DESC LIMIT 1"
NEWEST = "SELECT e.xid, e.seq FROM epoch_events e ORDER BY e.xid DESC, e.seq DESC LIMIT 1"
PENDING_COUNT = f"SELECT count(*) FROM epoch_events e WHERE e.xid >= {XMIN}"
OLDEST_TRANSACTION_AGE = (
    "SELECT extract(epoch FROM clock_timestamp() - min(xact_start))::float8 FROM pg_stat_activity"
    " WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
)
XMAX = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"

STREAM_VERSION = (
    "SELECT CASE WHEN s.version >= s.first_visible THEN s.version END FROM epoch_streams s WHERE s.stream = %s"
)
GET_EVENT = f"SELECT {_ALL_COLS} FROM epoch_events e WHERE e.id = %s"
