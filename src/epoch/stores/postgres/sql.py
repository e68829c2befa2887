"""What the PostgreSQL store says to its server: the statements it runs on its tables and sessions (all
static, so psycopg prepares them once per connection), the codes its functions take and raise, and the
position codec. The schema's DDL, functions and migration bookkeeping are in ``schema.py``; ``LISTEN`` is
in ``listen.py``.

Positions: ``position = xid << 32 | seq`` where ``xid`` is the 64-bit id of the writing transaction
(``pg_current_xact_id()``) and ``seq`` the event's ordinal inside that transaction. Readers see only rows
whose transaction is older than the oldest one still running (``xid < pg_snapshot_xmin(...)``): those
transactions have all ended, so no event can later appear before what was already read.
"""

from __future__ import annotations

from typing import LiteralString, NamedTuple

from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion
from epoch.stores._checks import MAX_INT64
from epoch.stores.postgres.url import SERVER_KEEPALIVES

CHANNEL = "epoch_events"
"""``epoch_append`` sends ``pg_notify('epoch_events', <category>)`` inside the append transaction, while
a listener is registered (``epoch_listeners``, migration 7)."""
LISTEN = f"LISTEN {CHANNEL}"
# Registering (migration 7) first tries without waiting for the appends in flight (each holds the table
# until it commits), so it holds no append back; then it waits, holding new appends back at most
# LISTENER_LOCK_TIMEOUT (a caller's own long transaction that appended holds the table longer: the
# listener tries again after its reconnect backoff, its subscriptions polling meanwhile).
REGISTER_LISTENER_NOWAIT = "SELECT epoch_listen(false)"
REGISTER_LISTENER = "SELECT epoch_listen(true)"
UNREGISTER_LISTENER = "DELETE FROM epoch_listeners WHERE pid = pg_backend_pid()"
LISTENER_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', '50ms', false)"

# SQLSTATEs the functions raise (class "EP" is free for applications), and the one of the id index.
WRONG_VERSION = "EP001"
OUT_OF_ORDER = "EP002"  # an append in a transaction older than the stream's last writer (schema.py, _V2)
CONDITION_FAILED = "EPD01"  # epoch_append_if: an event matches the condition (DETAIL: "xid:seq" of the first)
STREAM_DELETED = "EP003"  # a tombstoned stream (migration 4); DETAIL: the version it had
UNIQUE_VIOLATION = "23505"  # an event id is stored already (the unique index on id)

# Expected-version codes passed to the functions (an int >= 0 is itself).
EXPECT_ANY = -1
EXPECT_NO_STREAM = -2
EXPECT_STREAM_EXISTS = -3
EXPECT_UNREACHABLE = -4  # an int beyond 64 bits: no stream has that version, the guard always fails


def expected_code(expected: ExpectedVersion | int) -> int:
    """The ``p_expected`` argument of ``epoch_append``/``epoch_delete`` for a checked expected version."""
    if expected is ANY:
        return EXPECT_ANY
    if expected is NO_STREAM:
        return EXPECT_NO_STREAM
    if expected is STREAM_EXISTS:
        return EXPECT_STREAM_EXISTS
    assert isinstance(expected, int)
    # A bigint holds every version a stream can reach; a larger expected version can never match (and
    # would not bind): the guard fails and reports the stream's actual version, as for any wrong one.
    return expected if expected <= MAX_INT64 else EXPECT_UNREACHABLE


SEQ_BITS = 32
SEQ_MASK = (1 << SEQ_BITS) - 1


class Position(NamedTuple):
    """A place in the global log: the id of the transaction that wrote the event, and its ordinal in it."""

    xid: int
    seq: int

    def encode(self) -> int:
        """The public position: ``xid << 32 | seq`` (the order of ``(xid, seq)``, as one int)."""
        return (self.xid << SEQ_BITS) | self.seq

    @classmethod
    def decode(cls, position: int) -> Position:
        """The ``(xid, seq)`` of a public position (``0`` decodes to ``(0, 0)``, before every event)."""
        return cls(position >> SEQ_BITS, position & SEQ_MASK)


def encode_position(xid: int, seq: int) -> int:
    """The public position of the ``seq``-th event written by transaction ``xid``."""
    return Position(xid, seq).encode()


def decode_position(position: int) -> tuple[int, int]:
    """``(xid, seq)`` of a position (``after=0`` decodes to ``(0, 0)``, before every event)."""
    return Position.decode(position)


def positions_of(xid: int, seq: int, count: int) -> tuple[int, ...]:
    """The positions of ``count`` events written by transaction ``xid`` from ordinal ``seq`` on."""
    first = Position(xid, seq).encode()
    return tuple(range(first, first + count))  # consecutive ordinals are consecutive positions


# Each new connection's session: the store's timeouts (in ms), UTC, and the server's keepalives. The server
# probes the client as the client probes it: a session whose client is gone ends within the same bound,
# releasing its locks (a lease's advisory lock with it).
CONFIGURE = (
    "SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false),"
    " set_config('idle_in_transaction_session_timeout', %s, false)"
) + "".join(f", set_config('{name}', %s, false)" for name in SERVER_KEEPALIVES)
SERVER_ENCODING = "SHOW server_encoding"

XMIN = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"

# The event arrays travel in binary (%b): text format would hex-escape every byte of data and metadata.
APPEND = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, %s, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[])"
)
# One event (every command that decides one): the same call, its arrays built by the server from
# scalars, which the driver sends in a fraction of the time it takes to dump four one-element lists.
APPEND_ONE = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, %s, ARRAY[%b::uuid], ARRAY[%b::text], ARRAY[%b::bytea], ARRAY[%b::bytea])"
)
# A batch with tags: p_tag_events[i] is the 1-based index of the event carrying p_tags[i] (migration 3).
APPEND_TAGGED = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, %s, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::timestamptz[], %b::integer[], %b::text[])"
)
# A cached CommandHandler's append (migration 4): the same call, each returned row filtered through
# epoch_first_kept (a column of it is an argument, so it runs after epoch_append, under the stream's lock).
_KEPT = " a WHERE epoch_first_kept(a.r_version, %s, %s, %s)"
APPEND_GUARDED = APPEND + _KEPT
APPEND_ONE_GUARDED = APPEND_ONE + _KEPT
APPEND_TAGGED_GUARDED = APPEND_TAGGED + _KEPT
IMPORT = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    f"%s, {EXPECT_ANY}, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::timestamptz[],"
    " %b::integer[], %b::text[])"
)
LOCK_STREAMS = "SELECT epoch_lock_streams(%s::text[])"
PLACE_STREAM = (  # an import's stream whose first versions were erased at the source starts after them
    "INSERT INTO epoch_streams AS s (stream, version) VALUES (%s, %s)"
    " ON CONFLICT (stream) DO UPDATE SET version = greatest(s.version, excluded.version)"
)
SET_FIRST_VISIBLE = "UPDATE epoch_streams SET first_visible = greatest(first_visible, %s) WHERE stream = %s"
DELETE = "SELECT epoch_delete(%s, %s)"

FOUND_IDS = "SELECT id, stream, version, xid, seq, recorded_at FROM epoch_events WHERE id = ANY (%s::uuid[])"

_STREAM_COLS = "e.version, e.xid, e.seq, e.id, e.type, e.data, e.metadata, e.recorded_at, e.tags"
# The first version a read returns: first_visible, moved on by the stream's limits (migration 4). One row
# lookup, as before the limits; the max_age subquery runs only for a stream that has one.
_FIRST_VISIBLE = (
    "(SELECT greatest(s.first_visible, s.version - s.max_count + 1, CASE WHEN s.max_age IS NOT NULL THEN"
    " coalesce((SELECT min(x.version) FROM epoch_events x WHERE x.stream = s.stream AND x.version >= s.first_visible"
    " AND x.recorded_at >= clock_timestamp() - s.max_age), s.version + 1) END)"
    " FROM epoch_streams s WHERE s.stream = %(stream)s)"
)

READ_STREAM_FORWARD = (
    f"SELECT {_STREAM_COLS} FROM epoch_events e WHERE e.stream = %(stream)s"
    f" AND e.version >= greatest(%(from)s::bigint, {_FIRST_VISIBLE}) ORDER BY e.version LIMIT %(limit)s"
)
# A cached CommandHandler's read (stores.confirmed_read_of): READ_STREAM_FORWARD, and no row at all when the
# first visible version moved past %(first)s (or the stream has none): the check rides on the read.
READ_STREAM_CONFIRMED = (
    f"SELECT {_STREAM_COLS} FROM epoch_events e WHERE e.stream = %(stream)s"
    f" AND e.version >= greatest(%(from)s::bigint, {_FIRST_VISIBLE}) AND {_FIRST_VISIBLE} <= %(first)s::bigint"
    " ORDER BY e.version LIMIT %(limit)s"
)
READ_STREAM_BACKWARD = (
    f"SELECT {_STREAM_COLS} FROM epoch_events e WHERE e.stream = %(stream)s"
    f" AND e.version <= %(from)s::bigint AND e.version >= coalesce({_FIRST_VISIBLE}, 0)"
    " ORDER BY e.version DESC LIMIT %(limit)s"
)

_ALL_COLS = "e.stream, e.version, e.xid, e.seq, e.id, e.type, e.data, e.metadata, e.recorded_at, e.tags"
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
HEAD_POSITION = (  # the visible head, or an erased position when that is newer (it never goes back): the
    # highest erased once it is visible, and the highest erased that was visible already (migration 9)
    f"SELECT h.xid, h.seq FROM (({VISIBLE_HEAD}) UNION ALL"
    f" (SELECT r.xid, r.seq FROM epoch_erased r WHERE r.xid < {XMIN}) UNION ALL"
    " (SELECT r.seen_xid, r.seen_seq FROM epoch_erased r WHERE r.seen_xid IS NOT NULL))"
    " h ORDER BY h.xid DESC, h.seq DESC LIMIT 1"
)
PENDING_COUNT = f"SELECT count(*) FROM epoch_events e WHERE e.xid >= {XMIN}"
OLDEST_TRANSACTION_AGE = (
    "SELECT extract(epoch FROM clock_timestamp() - min(xact_start))::float8 FROM pg_stat_activity"
    " WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
)
XMAX = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
# The transaction holding the readers' horizon back (the oldest one running: its xid is the snapshot's
# xmin), its backend and how long it has been open; pid NULL when this role may not see that session (or
# for a prepared transaction). backend_xid is the 32-bit xid: the low half of the 64-bit one.
HOLDER = (
    f"SELECT x.xmin, a.pid, extract(epoch FROM clock_timestamp() - a.xact_start)::float8 FROM (SELECT {XMIN} AS xmin) x"
    " LEFT JOIN pg_stat_activity a ON a.backend_xid::text::bigint = x.xmin & 4294967295 LIMIT 1"
)

STREAM_VERSION = (
    "SELECT CASE WHEN s.version >= s.first_visible THEN s.version END FROM epoch_streams s WHERE s.stream = %s"
)
GET_EVENT = f"SELECT {_ALL_COLS} FROM epoch_events e WHERE e.id = %s"

# -- dynamic consistency boundaries (migration 3; stores/postgres/dcb.py) ------------------------------

APPEND_IF = (
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append_if("
    "%s, %s, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::integer[], %b::text[],"
    " %s::jsonb, epoch_event_keys(%b::text[], %b::text[]), %s, %s, %s)"
)
# append_many: every stream's lock, then the shared type and tag locks of every event, in one pass each,
# before the first write (the order epoch_append takes them in, so nothing deadlocks); and one clock.
LOCK_MANY = (
    "SELECT epoch_lock_streams(%s::text[]), epoch_lock_keys('{}', epoch_event_keys(%b::text[], %b::text[])),"
    " clock_timestamp()"
)
APPEND_AT = (  # append_many's appends: one recorded_at for every event of the call
    "SELECT r_version, r_xid, r_seq, r_recorded_at FROM epoch_append("
    "%s, %s, %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::timestamptz[], %b::integer[], %b::text[])"
)


def read_query(shape: tuple[tuple[int, int], ...]) -> LiteralString:
    """``read_query`` for items of the given shape: per item, ``(number of tags, number of types)``.

    Each branch is one ordered range scan of an index, limited to a page: an item with tags scans its
    first tag's range of the tag index (``%(t{i})s``), each row joined to its event by one probe of the
    primary key (``LATERAL ... LIMIT 1``, which the planner cannot turn into a join over the whole table)
    and checked for all the item's tags ``%(a{i})s`` and types ``%(k{i})s``; an item with types only
    scans one range of the type index per type (``%(k{i}_{j})s``). The branches are merged in log order
    and de-duplicated (an event matching two items is read once). The visibility rule is read_all's. An
    item with neither (every event) is :data:`READ_ALL`, chosen by the caller.
    """
    branches: list[str] = []
    for i, (tags, types) in enumerate(shape):
        if tags:
            typed = f" AND e.type = ANY (%(k{i})s::text[])" if types else ""
            branches.append(
                f"(SELECT e.* FROM epoch_event_tags t CROSS JOIN LATERAL (SELECT {_ALL_COLS} FROM epoch_events e"
                f" WHERE e.xid = t.xid AND e.seq = t.seq AND e.tags @> %(a{i})s::text[]{typed} LIMIT 1) e"
                f" WHERE t.tag = %(t{i})s AND (t.xid, t.seq) > (%(xid)s::bigint, %(seq)s::bigint)"
                f" AND t.xid < {XMIN} ORDER BY t.xid, t.seq LIMIT %(limit)s)"
            )
        else:
            branches.extend(
                f"(SELECT {_ALL_COLS} FROM epoch_events e WHERE e.type = %(k{i}_{j})s AND {_AFTER}"
                f" AND e.xid < {XMIN} ORDER BY e.xid, e.seq LIMIT %(limit)s)"
                for j in range(types)
            )
    if len(branches) == 1:
        return branches[0][1:-1]  # literals only: the names and counts are ints
    union = " UNION ALL ".join(branches)
    return f"SELECT DISTINCT ON (u.xid, u.seq) u.* FROM ({union}) u ORDER BY u.xid, u.seq LIMIT %(limit)s"
