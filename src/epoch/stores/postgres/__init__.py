"""The PostgreSQL event store: many processes on many machines, gap-free global order, live subscriptions.

``open_store("postgresql://user:password@host:5432/db")``. Built on psycopg 3: every statement runs on
its asyncio connections, on the caller's loop, from one pool (see ``pool.Connections``); ``transaction()``
yields one of them. The schema is created and
upgraded by versioned migrations (``epoch migrate``, or automatically on first use unless the URL says
``?migrate=false``).

**Global order without a global lock.** Each event row records the id of the transaction that wrote it
(``pg_current_xact_id()``, 64 bits, never wraps) and its ordinal inside that transaction; the public
position is the pair as one int (``sql.Position``). Readers only see rows of transactions older than the
oldest transaction still running (``pg_snapshot_xmin(pg_current_snapshot())``): every such transaction has
ended, so nothing can commit later *before* what a reader has already seen. Writers never wait for each
other unless they append to the same stream. The trade-off: while any transaction in the cluster stays
open, events committed after it started stay invisible to ``read_all``/``subscribe``
(see :meth:`PostgresEventStore.visibility_lag`).

The modules, one concern each: ``sql`` (statements, codes, the position codec), ``schema`` (migrations),
``pool`` (connections, retries, and the one table that maps driver errors to epoch's), ``appends``
(appends in one round trip, deletes, imports), ``reads`` (pages, the visibility wait), ``listen`` (one
``LISTEN`` connection per store; subscriptions fall back to a slow poll), ``lag`` (the visibility lag)
and ``url`` (store URLs).
"""

from __future__ import annotations

# psycopg first: without the ``postgres`` extra, importing this package raises MissingDependency naming it
# (importing ``epoch`` or ``epoch.stores`` never imports psycopg).
try:
    import psycopg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("psycopg", "postgres") from exc

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar
from uuid import UUID

from epoch.errors import StoreUnavailable
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._base import StoreLifecycle
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    GLOBAL_LOG,
    MAX_INT64,
    check_append,
    check_max_event_size,
    check_read,
    check_stream_name,
    clamp64,
    runs_of,
)
from epoch.stores._sql import Dialect, PostgresTransaction, SQLStore, SupportsImport
from epoch.stores._sql_keys import SQLKeys
from epoch.stores.postgres import appends, dcb, lifecycle, reads
from epoch.stores.postgres import sql as q
from epoch.stores.postgres.lag import VisibilityLag, measure_visibility_lag
from epoch.stores.postgres.listen import Listener, Waiter
from epoch.stores.postgres.pool import Conn, Connections, driver_errors
from epoch.stores.postgres.schema import apply_migrations, check_schema, migrate
from epoch.stores.postgres.snapshots import PostgresQuerySnapshots, PostgresSnapshots
from epoch.stores.postgres.sql import decode_position, encode_position
from epoch.stores.postgres.url import check_pooler, network_options, parse_url, prepare_options, server_side

__all__ = ["PostgresEventStore", "VisibilityLag", "decode_position", "encode_position", "migrate"]
__all__ += ["network_options", "server_side"]  # a lease session's network settings (projections.scaleout)


class PostgresEventStore(
    StoreLifecycle,
    SQLStore,
    SupportsImport,
    lifecycle.Lifecycle,
    PostgresSnapshots,
    PostgresQuerySnapshots,
    SQLKeys,
    dcb.Boundaries,
):
    """An :class:`~epoch.stores.EventStore` on PostgreSQL (13+).

    Construct with a libpq connection string or URI and ``await store.open()`` (or use
    :meth:`from_url` / ``open_store``). Options (also accepted as URL query parameters):

    - ``migrate`` (True): create or upgrade the schema on open; with False a missing schema is an error.
    - ``pool_min``/``pool_max`` (1/20): connection pool bounds; ``pool_timeout`` (10 s) to get one.
    - ``statement_timeout`` (30 s) and ``idle_in_transaction_timeout`` (60 s): server-side bounds.
    - ``reconnect_timeout`` (10 s): how long ``append``/reads retry on a lost connection
      (retrying an append is safe: its event ids make it idempotent) before ``StoreUnavailable``.
    - ``poll_interval`` (2 s): the safety poll of subscriptions, beside LISTEN/NOTIFY.
    - ``visibility_timeout`` (1 s): how long ``read_all``/``read_query``/``head_position`` wait for
      transactions still open when they reach the end of the visible log (events committed after those
      stay invisible), and ``append_with_condition`` for an event refusing it to become visible (then
      ``StoreUnavailable``: ``dcb.py``).
    - ``pooler`` (``none``; ``session`` is the same): ``transaction`` behind a transaction-pooling
      PgBouncer: no server-side prepared statements, and subscriptions poll every ``poll_interval``
      instead of LISTENing (a LISTEN holds no server connection of its own there; see
      docs/stores/postgresql.md, "Behind PgBouncer").
    - ``prepared_statements`` (``None``: on, off with ``pooler=transaction``): server-side prepared
      statements; on behind a transaction-pooling PgBouncer 1.22+ with ``max_prepared_statements`` set.
    """

    dialect: ClassVar[Dialect] = "postgresql"

    detects_duplicate_ids_across_streams = True
    """Guarantee 5 in full: every stored id is in an index (``epoch.testing.contract_ids``)."""

    boundary_operations = frozenset({"read_query", "append_with_condition", "append_many"})
    """All three, from indexes and advisory locks (``dcb.py``, ``migrations/v3.py``)."""

    erases_at_once = True
    """Hard deletes and truncations erase the events at once (``epoch.testing.contract_erasure``)."""

    def __init__(
        self,
        conninfo: str,
        *,
        migrate: bool = True,
        pool_min: int = 1,
        pool_max: int = 20,
        pool_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        idle_in_transaction_timeout: float = 60.0,
        reconnect_timeout: float = 10.0,
        poll_interval: float = 2.0,
        visibility_timeout: float = 1.0,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        pooler: str = "none",
        prepared_statements: bool | None = None,
    ) -> None:
        self.conninfo: str = conninfo
        self.pooler = check_pooler(pooler)
        prepare_threshold, prepared_max = prepare_options(self.pooler, prepared_statements)
        self.prepared_statements = prepare_threshold is not None
        self.migrate = migrate
        self.max_event_size = check_max_event_size(max_event_size)
        self.reconnect_timeout = reconnect_timeout
        self.poll_interval = poll_interval
        self.visibility_timeout = visibility_timeout
        self.statement_timeout = statement_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._db = Connections(
            conninfo,
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout=pool_timeout,
            statement_timeout=statement_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
            reconnect_timeout=reconnect_timeout,
            prepare_threshold=prepare_threshold,
            prepared_max=prepared_max,
        )
        self._listener: Listener | None = None
        self._closing = asyncio.Event()  # set by close(): wakes subscriptions that wait for nothing
        self._before_commit: Callable[[], Awaitable[None]] | None = None
        """Test hook: awaited inside the append transaction, just before it commits."""

    @classmethod
    async def from_url(cls, url: str, **overrides: Any) -> PostgresEventStore:
        """Open the store a ``postgresql://`` URL names (epoch's options may be given as query parameters)."""
        conninfo, options = parse_url(url)
        options.update(overrides)
        store = cls(conninfo, **options)
        await store.open()
        return store

    @staticmethod
    def conninfo_of(url: str) -> tuple[str, dict[str, Any]]:
        """A ``postgresql://`` store URL split as :meth:`from_url` does: the libpq URI, and epoch's own
        options given as query parameters (e.g. ``{"pool_timeout": 3.0}``). Raises ``ConfigurationError``."""
        return parse_url(url)

    async def open(self) -> None:
        """Connect, then create or upgrade the schema (``migrate=True``) or check it is current."""
        if self._db.opened:
            return
        if self._db.closed:
            raise StoreUnavailable("the PostgreSQL store is closed")
        try:
            with driver_errors():
                # The direct connection first (not pooled: the pools keep only what they use): a server that
                # refuses (no such database, a wrong password) says why at once, where the pool only retries
                # until its timeout and then says it had no connection.
                async with self._db.direct() as conn:
                    await check_schema(conn, self.migrate)
                await self._db.open()
        except BaseException:
            await self._db.close()
            self._db.closed = True
            raise
        self._db.opened = True

    async def close(self) -> None:
        """Close the pool and the LISTEN connection; subscriptions then raise ``StoreUnavailable``. Idempotent."""
        if self._db.closed:
            return
        self._db.closed = True
        self._closing.set()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self._db.close()

    async def _enter(self) -> None:
        await self.open()

    @property
    def _snapshot_db(self) -> Connections:
        return self._db

    # -- writing --------------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        return await appends.append(self._db, stream, batch, expected, self._before_commit)

    async def append_guarded(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike, first_version: int
    ) -> AppendResult:
        """``append``, also refused when the stream's first visible version moved past ``first_version``
        (the check of a cached ``CommandHandler``, in the append's own statement)."""
        stream, batch, expected = check_append(stream, events, expected_version, self.max_event_size)
        return await appends.append(self._db, stream, batch, expected, self._before_commit, first_version)

    async def import_events(
        self, events: Sequence[RecordedEvent], first_visible: Mapping[str, int] | None = None
    ) -> list[int]:
        """Append already-recorded events (e.g. from another store) in one transaction, for ``epoch copy``.

        Each event lands at exactly its ``version`` (a stream's versions must continue where it ends) and
        keeps its id, type, data, metadata and ``recorded_at``; the store assigns new positions in the
        given order and returns them. ``first_visible`` then soft-deletes each named stream's versions
        below the given one. Raises ``WrongExpectedVersion`` when a version does not fit.
        """
        runs = runs_of(events, self.max_event_size)
        return await appends.import_runs(self._db, runs, first_visible)

    # -- reading --------------------------------------------------------------------------------

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        def start() -> tuple[int, int | None]:
            check_read(stream, from_version, limit, backwards=backwards)
            self._db.check_open(stream)
            # A bound beyond 64 bits is past every version (guarantee 13): capped, it reads the same.
            if backwards:
                return (MAX_INT64 if from_version is None else clamp64(from_version)), None
            return (0 if from_version is None else clamp64(from_version)), None

        return reads.stream_events(self._db, stream, start, limit, backwards)

    def read_stream_confirmed(self, stream: str, from_version: int, first_version: int) -> AsyncIterator[RecordedEvent]:
        """``read_stream(stream, from_version=...)``, or nothing when the stream's first visible version
        is past ``first_version``: a cached load's check in its first page's query (one round trip)."""
        return reads.confirmed_events(self._db, stream, from_version, first_version)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        def start() -> reads.Page | None:
            names = check_read(GLOBAL_LOG, after, limit, categories=categories).categories
            self._db.check_open()
            if names == ():  # an empty filter matches nothing (guarantee 11): no query
                return None
            return partial(reads.read_page, self._db, names)

        return reads.visible_pages(self._db, start, after, limit, self.visibility_timeout)

    async def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        names = check_read(GLOBAL_LOG, after, categories=categories).categories
        self._db.check_open()
        if names == ():
            # An empty filter matches nothing (guarantee 11): wait, without querying, until closed.
            await self._closing.wait()
            self._db.check_open()
        if self.pooler == "transaction":  # no LISTEN through a transaction pooler: the poll alone
            waiter = Waiter(names, self.poll_interval)
        else:
            if self._listener is None:
                self._listener = Listener(self.conninfo, self.poll_interval)
            waiter = self._listener.register(names)
        try:
            short = 0.002
            while True:
                waiter.clear()
                events = await reads.subscription_page(self._db, names, after)
                for event in events:
                    yield event
                if events:
                    after = events[-1].position
                    short = 0.002
                    if len(events) == reads.PAGE:
                        continue
                if await reads.subscription_pending(self._db, after):
                    await asyncio.sleep(short)  # an older transaction is still open: it ends soon, or not
                    short = min(short * 2, 0.2)
                    continue
                await waiter.wait()
                self._db.check_open()
        finally:
            if self._listener is not None:
                await self._listener.unregister(waiter)

    # -- point queries --------------------------------------------------------------------------

    async def stream_version(self, stream: str) -> int | None:
        check_stream_name(stream)

        async def version(conn: Conn) -> int | None:
            row = await (await conn.execute(q.STREAM_VERSION, (stream,))).fetchone()
            return None if row is None else row[0]

        return await self._db.run(version, stream)

    async def head_position(self) -> int:
        self._db.check_open()
        pending = await reads.pending(self._db, 0)
        if pending is not None:
            await reads.wait_visible(self._db, pending, self.visibility_timeout)

        async def head(conn: Conn) -> int:
            row = await (await conn.execute(q.HEAD_POSITION)).fetchone()
            return 0 if row is None else encode_position(row[0], row[1])

        return await self._db.run(head)

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        if stream is not None:
            check_stream_name(stream)
        self._db.check_open()

        async def get(conn: Conn) -> RecordedEvent | None:
            async with conn.cursor(binary=True) as cur:
                await cur.execute(q.GET_EVENT, (id,))
                row = await cur.fetchone()
            return None if row is None else reads.row_all(row)

        found = await self._db.run(get)
        return None if found is None or (stream is not None and found.stream != stream) else found

    async def visibility_lag(self) -> VisibilityLag:
        """How far ``read_all``/``subscribe`` trail the committed log right now, and why.

        Events become visible only when every transaction that started before them has ended, so a
        long-open transaction anywhere in the cluster (also one that never touches epoch) holds them back.
        """

        return await self._db.run(measure_visibility_lag)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A pooled connection inside a transaction, committed when the block ends (rolled back on error).

        Run ``?``-style SQL with ``await tx.execute(sql, params)``; ``tx.connection`` is the psycopg
        connection for anything else (e.g. COPY).

        For exactly-once projections: update a read model and its checkpoint in one transaction.
        A lost connection raises ``StoreUnavailable``. Keep it short: while it is open (and has written),
        events committed after it started stay invisible to every reader.
        """
        self._db.check_open()
        # Only errors of the connection are epoch's; those of the caller's own SQL are raised as psycopg's.
        with driver_errors(only=psycopg.OperationalError):
            async with self._db.slot(), self._db.connection() as conn, conn.transaction():
                yield PostgresTransaction(conn)

    async def migrate_schema(self) -> list[tuple[int, str]]:
        """Apply missing migrations now; returns the ``(version, description)`` pairs applied."""

        self._db.check_open()
        with driver_errors(closed=lambda: self._db.closed):
            async with self._db.direct() as conn:
                return await apply_migrations(conn)
