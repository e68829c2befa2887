"""The PostgreSQL event store: many processes on many machines, gap-free global order, live subscriptions.

``open_store("postgresql://user:password@host:5432/db")``. Built on psycopg 3 (async) and an
``AsyncConnectionPool``; the schema is created and upgraded by versioned migrations (``epoch migrate``,
or automatically on first use unless the URL says ``?migrate=false``).

**Global order without a global lock.** Each event row records the id of the transaction that wrote it
(``pg_current_xact_id()``, 64 bits, never wraps) and its ordinal inside that transaction. The public
position is ``xid << 32 | ordinal``. Readers only see rows of transactions older than the oldest
transaction still running (``pg_snapshot_xmin(pg_current_snapshot())``): every such transaction has
ended, so nothing can commit later *before* what a reader has already seen. Writers never wait for each
other unless they append to the same stream. The trade-off: while any transaction in the cluster stays
open, events committed after it started stay invisible to ``read_all``/``subscribe``
(see :meth:`PostgresEventStore.visibility_lag`).

Appends are one round trip: the ``epoch_append`` function locks the stream's row, checks the ids and the
expected version, inserts the batch (``unnest``) and sends ``NOTIFY epoch_events`` in one statement.
Subscriptions share one ``LISTEN`` connection per store and fall back to a slow poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import msgspec

from epoch.errors import (
    ConfigurationError,
    DuplicateEventId,
    MissingDependency,
    StoreUnavailable,
    WrongExpectedVersion,
)
from epoch.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    ExpectedVersionLike,
    NewEvent,
    RecordedEvent,
)
from epoch.stores import _postgres_sql as q
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    check_categories,
    check_events,
    check_expected_version,
    check_read_bounds,
    check_stream_name,
    is_replay,
)
from epoch.stores._import import runs_of
from epoch.stores._postgres_listen import Listener
from epoch.stores._postgres_schema import (
    EXPECT_ANY,
    EXPECT_NO_STREAM,
    EXPECT_STREAM_EXISTS,
    LATEST_VERSION,
    UNIQUE_VIOLATION,
    WRONG_VERSION,
    apply_migrations,
    schema_version,
)

try:
    import psycopg
    import psycopg.errors
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("psycopg", "postgres") from exc

__all__ = ["PostgresEventStore", "VisibilityLag", "decode_position", "encode_position", "migrate"]

log = logging.getLogger("epoch.stores.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

_PAGE = 1000


def encode_position(xid: int, seq: int) -> int:
    """The public position of the ``seq``-th event written by transaction ``xid``."""
    return (xid << q.SEQ_BITS) | seq


def decode_position(position: int) -> tuple[int, int]:
    """``(xid, seq)`` of a position (``after=0`` decodes to ``(0, 0)``, before every event)."""
    return position >> q.SEQ_BITS, position & q.SEQ_MASK


class VisibilityLag(msgspec.Struct, frozen=True):
    """How far the visible head of the log trails what is committed (see :meth:`PostgresEventStore.visibility_lag`)."""

    visible_head: int
    """Position of the last event readers can see (0: none)."""
    committed_head: int
    """Position of the last committed event, visible or not."""
    pending_events: int
    """Committed events not yet visible because an older transaction is still open."""
    oldest_transaction_age: float | None
    """Seconds the oldest open transaction (with a transaction id) in the cluster has been running."""


def _expected_code(expected: ExpectedVersion | int) -> int:
    if expected is ANY:
        return EXPECT_ANY
    if expected is NO_STREAM:
        return EXPECT_NO_STREAM
    if expected is STREAM_EXISTS:
        return EXPECT_STREAM_EXISTS
    assert isinstance(expected, int)
    return expected


def _is_disconnect(exc: psycopg.Error) -> bool:
    """A lost or refused connection, or none free in the pool: worth retrying; not a statement timeout."""
    if isinstance(exc, (PoolTimeout, psycopg.InterfaceError)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _unavailable(exc: BaseException, stream: str | None = None) -> StoreUnavailable:
    if isinstance(exc, PoolTimeout):
        reason = "no connection to PostgreSQL within the pool timeout"
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        reason = "PostgreSQL statement timed out"
    else:
        reason = f"PostgreSQL error: {str(exc).strip() or type(exc).__name__}"
    return StoreUnavailable(reason, stream)


def _row_all(row: Sequence[Any]) -> RecordedEvent:
    stream, version, xid, seq, id, type, data, metadata, at = row
    return RecordedEvent(stream, version, (xid << 32) | seq, id, type, data, metadata, at)


_TRUE = ("1", "true", "yes", "on")
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "migrate": lambda v: v.lower() in _TRUE,
    "pool_min": int,
    "pool_max": int,
    "pool_timeout": float,
    "statement_timeout": float,
    "idle_in_transaction_timeout": float,
    "reconnect_timeout": float,
    "poll_interval": float,
    "visibility_timeout": float,
    "max_event_size": int,
}


def _parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a store URL into a libpq URI and epoch's own options (query parameters named in ``_OPTIONS``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a PostgreSQL URL: {url!r}")
    options: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTIONS:
            try:
                options[key] = _OPTIONS[key](value)
            except ValueError:
                raise ConfigurationError(f"bad value for {key} in the store URL: {value!r}") from None
        else:
            rest.append((key, value))
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    return conninfo, options


class PostgresEventStore:
    """An :class:`~epoch.stores.EventStore` on PostgreSQL (13+).

    Construct with a libpq connection string or URI and ``await store.open()`` (or use
    :meth:`from_url` / ``open_store``). Options (also accepted as URL query parameters):

    - ``migrate`` (True): create or upgrade the schema on open; with False a missing schema is an error.
    - ``pool_min``/``pool_max`` (1/20): connection pool bounds; ``pool_timeout`` (10 s) to get one.
    - ``statement_timeout`` (30 s) and ``idle_in_transaction_timeout`` (60 s): server-side bounds.
    - ``reconnect_timeout`` (10 s): how long ``append``/reads retry on a lost connection
      (retrying an append is safe: its event ids make it idempotent) before ``StoreUnavailable``.
    - ``poll_interval`` (2 s): the safety poll of subscriptions, beside LISTEN/NOTIFY.
    - ``visibility_timeout`` (1 s): how long ``read_all``/``head_position`` wait for transactions still
      open when they reach the end of the visible log (events committed after those stay invisible).
    """

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
    ) -> None:
        self.conninfo = conninfo
        self.migrate = migrate
        self.max_event_size = max_event_size
        self.reconnect_timeout = reconnect_timeout
        self.poll_interval = poll_interval
        self.visibility_timeout = visibility_timeout
        self.statement_timeout = statement_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            min_size=pool_min,
            max_size=max(pool_min, pool_max),
            timeout=pool_timeout,
            kwargs={"autocommit": True, "prepare_threshold": 0, "connect_timeout": max(1, round(pool_timeout))},
            configure=self._configure,
            open=False,
            name="epoch",
        )
        self._opened = False
        self._closed = False
        self._recovering_until = 0.0  # after a lost connection: bypass the pool while it reconnects
        self._listener: Listener | None = None
        self._before_commit: Callable[[], Awaitable[None]] | None = None
        """Test hook: awaited inside the append transaction, just before it commits."""

    @classmethod
    async def from_url(cls, url: str, **overrides: Any) -> PostgresEventStore:
        """Open the store a ``postgresql://`` URL names (epoch's options may be given as query parameters)."""
        conninfo, options = _parse_url(url)
        options.update(overrides)
        store = cls(conninfo, **options)
        await store.open()
        return store

    async def _configure(self, conn: Conn) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (
                str(round(self.statement_timeout * 1000)),
                str(round(self.idle_in_transaction_timeout * 1000)),
            ),
            prepare=False,
        )

    async def open(self) -> None:
        """Connect, then create or upgrade the schema (``migrate=True``) or check it is current."""
        if self._opened:
            return
        if self._closed:
            raise StoreUnavailable("the PostgreSQL store is closed")
        try:
            await self._pool.open(wait=True, timeout=self._pool.timeout)
            async with self._pool.connection() as conn:
                row = await (await conn.execute("SHOW server_encoding", prepare=False)).fetchone()
                if row is None or row[0] != "UTF8":
                    raise ConfigurationError(f"the database encoding must be UTF8, not {row and row[0]!r}")
                version = await schema_version(conn)
                if version < LATEST_VERSION:
                    if not self.migrate:
                        raise ConfigurationError(
                            f"the epoch schema is at version {version}, {LATEST_VERSION} is needed: "
                            "run `epoch migrate --store URL` (or open without ?migrate=false)"
                        )
                    await apply_migrations(conn)
                elif version > LATEST_VERSION:
                    raise ConfigurationError(
                        f"the epoch schema is at version {version}, newer than this epoch ({LATEST_VERSION}): upgrade epoch"
                    )
                newest = await (await conn.execute(q.NEWEST, prepare=False)).fetchone()
                xmax = await (await conn.execute(q.XMAX, prepare=False)).fetchone()
                if newest is not None and xmax is not None and newest[0] >= xmax[0]:
                    raise ConfigurationError(
                        "epoch_events holds transaction ids newer than this server's: it was restored from a dump "
                        "into another cluster, so new positions would sort before old ones; use `epoch copy` instead"
                    )
        except psycopg.Error as exc:
            await self._pool.close()
            self._closed = True
            raise _unavailable(exc) from exc
        except BaseException:
            await self._pool.close()
            self._closed = True
            raise
        self._opened = True

    async def close(self) -> None:
        """Close the pool and the LISTEN connection; subscriptions then raise ``StoreUnavailable``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self._pool.close()

    async def __aenter__(self) -> PostgresEventStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self, stream: str | None = None) -> None:
        if self._closed or not self._opened:
            raise StoreUnavailable(
                "the PostgreSQL store is closed" if self._closed else "the store is not open", stream
            )

    async def _run(self, fn: Callable[[Conn], Awaitable[T]], stream: str | None = None, *, retry: bool = True) -> T:
        """Run ``fn`` on a pooled connection; on a lost connection retry (with backoff) until ``reconnect_timeout``."""
        self._check_open(stream)
        deadline: float | None = None
        delay = 0.02
        while True:
            try:
                return await self._attempt(fn)
            except psycopg.Error as exc:
                if self._closed:
                    raise StoreUnavailable("the PostgreSQL store is closed", stream) from exc
                if not (retry and _is_disconnect(exc)):
                    raise _unavailable(exc, stream) from exc
                now = time.monotonic()
                self._recovering_until = now + 60.0
                deadline = deadline or now + self.reconnect_timeout
                if now + delay > deadline:
                    raise _unavailable(exc, stream) from exc
                log.info("lost the PostgreSQL connection (%s), retrying in %.2fs", exc, delay)
                await self._purge()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    async def _attempt(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if time.monotonic() >= self._recovering_until:
            async with self._pool.connection() as conn:
                return await fn(conn)
        # Shortly after a lost connection the pool reconnects with its own backoff (1 s, 2 s, 4 s, ...):
        # take a pooled connection if one is ready, else a direct one, so recovery is not delayed.
        try:
            async with self._pool.connection(timeout=0.05) as conn:
                result = await fn(conn)
            self._recovering_until = 0.0
            return result
        except PoolTimeout:
            pass
        direct = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=max(1, round(self._pool.timeout))
        )
        async with direct:
            await self._configure(direct)
            return await fn(direct)

    async def _purge(self) -> None:
        """Drop the pool's dead connections (after a server restart all of them are)."""
        try:
            await self._pool.check()
        except Exception:  # pragma: no cover - best effort
            log.debug("pool check failed", exc_info=True)

    # -- writing --------------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)
        batch = check_events(stream, events, self.max_event_size)
        self._check_open(stream)
        params = (
            stream,
            _expected_code(expected),
            [e.id for e in batch],
            [e.type for e in batch],
            [e.data for e in batch],
            [e.metadata for e in batch],
        )
        hook = self._before_commit

        async def attempt(conn: Conn) -> tuple[int | None, int, int, datetime | None] | None:
            async with conn.cursor() as cur:
                if hook is None:
                    await cur.execute(q.APPEND, params)
                    return await cur.fetchone()
                async with conn.transaction():
                    await cur.execute(q.APPEND, params)
                    row = await cur.fetchone()
                    await hook()
                    return row

        try:
            row = await self._run(attempt, stream)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            state = getattr(cause, "sqlstate", None)
            if state not in (WRONG_VERSION, UNIQUE_VIOLATION):
                raise
            # Some ids may be stored already: an idempotent retry (even with a stale guard) returns the
            # first result; ids stored elsewhere raise DuplicateEventId (as on every store, that wins).
            if batch and (replayed := await self._replay(stream, batch, expected)) is not None:
                return replayed
            if state == UNIQUE_VIOLATION:  # only ids are unique outside the stream lock: not reached
                raise
            detail = cause.diag.message_detail if isinstance(cause, psycopg.Error) else None
            raise WrongExpectedVersion(stream, expected, int(detail) if detail else None) from None
        if not batch:
            if row is None:
                return AppendResult(stream, None, 0, (), None)
            version, xid, seq, at = row
            return AppendResult(stream, version, encode_position(xid, seq), (), at)
        assert row is not None
        version, xid, seq, at = row
        base = xid << q.SEQ_BITS
        positions = tuple(range(base | seq, (base | seq) + len(batch)))
        return AppendResult(stream, version, positions[-1], positions, at)

    async def _replay(self, stream: str, batch: list[NewEvent], expected: ExpectedVersion | int) -> AppendResult | None:
        """The first result when ``batch`` is stored here already; ``DuplicateEventId`` when any id is
        stored elsewhere; ``None`` when no id is stored."""

        async def fetch(conn: Conn) -> list[tuple[UUID, str, int, int, int, datetime]]:
            cur = await conn.execute(q.FOUND_IDS, ([e.id for e in batch],))
            return await cur.fetchall()

        rows = {row[0]: row for row in await self._run(fetch, stream)}
        stored = {id: (row[1], row[2]) for id, row in rows.items()}
        if not is_replay(stream, batch, expected, stored):  # raises DuplicateEventId when misplaced
            return None
        written = [rows[e.id] for e in batch]
        positions = tuple(encode_position(r[3], r[4]) for r in written)
        return AppendResult(stream, written[-1][2], positions[-1], positions, written[-1][5])

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY) -> None:
        check_stream_name(stream)
        expected = check_expected_version(stream, expected_version)

        async def delete(conn: Conn) -> None:
            await conn.execute(q.DELETE, (stream, _expected_code(expected)))

        try:
            await self._run(delete, stream, retry=False)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, psycopg.Error) and cause.sqlstate == WRONG_VERSION:
                detail = cause.diag.message_detail
                raise WrongExpectedVersion(stream, expected, int(detail) if detail else None) from None
            raise

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

        async def write(conn: Conn) -> list[int]:
            positions: list[int] = []
            async with conn.transaction(), conn.cursor() as cur:
                for run in runs:
                    await cur.execute(
                        q.IMPORT,
                        (
                            run[0].stream,
                            [e.id for e in run],
                            [e.type for e in run],
                            [e.data for e in run],
                            [e.metadata for e in run],
                            [e.recorded_at for e in run],
                        ),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    version, xid, seq, _ = row
                    if version != run[-1].version:
                        actual = version - len(run)
                        raise WrongExpectedVersion(run[0].stream, run[0].version - 1, None if actual < 0 else actual)
                    positions.extend(encode_position(xid, seq + i) for i in range(len(run)))
                for stream, version in (first_visible or {}).items():
                    await cur.execute(q.SET_FIRST_VISIBLE, (version, stream))
            return positions

        try:
            return await self._run(write, retry=False)
        except StoreUnavailable as exc:
            if getattr(exc.__cause__, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            ids = [e.id for run in runs for e in run]

            async def fetch(conn: Conn) -> list[tuple[UUID, str, int, int, int, datetime]]:
                cur = await conn.execute(q.FOUND_IDS, (ids,))
                return await cur.fetchall()

            found = {row[0]: row for row in await self._run(fetch)}
            for run in runs:
                for event in run:
                    if (place := found.get(event.id)) is not None:
                        raise DuplicateEventId(event.stream, event.id, place[1], place[2]) from None
            raise

    # -- reading --------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        check_stream_name(stream)
        check_read_bounds(stream, from_version, limit)
        self._check_open(stream)
        remaining = limit
        if backwards:
            cursor = (1 << 62) if from_version is None else from_version
        else:
            cursor = 0 if from_version is None else from_version
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None else min(_PAGE, remaining)
            params = {"stream": stream, "from": cursor, "limit": size}
            sql = q.READ_STREAM_BACKWARD if backwards else q.READ_STREAM_FORWARD

            async def page(conn: Conn, sql: Any = sql, params: dict[str, Any] = params) -> list[Any]:
                async with conn.cursor(binary=True) as cur:
                    await cur.execute(sql, params)
                    return await cur.fetchall()

            rows = await self._run(page, stream)
            for version, xid, seq, id, type, data, metadata, at in rows:
                yield RecordedEvent(stream, version, (xid << 32) | seq, id, type, data, metadata, at)
            if len(rows) < size:
                return
            if remaining is not None:
                remaining -= len(rows)
            cursor = rows[-1][0] + (-1 if backwards else 1)
            if cursor < 0:
                return

    def _page_query(self, names: tuple[str, ...] | None, after: int, size: int) -> tuple[Any, dict[str, Any]]:
        xid, seq = decode_position(after)
        params: dict[str, Any] = {"xid": xid, "seq": seq, "limit": size}
        if names is None:
            return q.READ_ALL, params
        if len(names) > q.MAX_UNION_CATEGORIES:
            params["categories"] = list(names)
        else:
            params.update({f"c{i}": name for i, name in enumerate(names)})
        return q.read_categories(len(names)), params

    async def _read_page(self, names: tuple[str, ...] | None, after: int, size: int) -> list[RecordedEvent]:
        sql, params = self._page_query(names, after, size)

        async def page(conn: Conn) -> list[RecordedEvent]:
            async with conn.cursor(binary=True) as cur:
                await cur.execute(sql, params)
                return [_row_all(row) for row in await cur.fetchall()]

        return await self._run(page)

    async def _pending(self, after: int) -> int | None:
        """The newest committed-but-invisible transaction id past ``after``, or None when there is none."""

        async def check(conn: Conn) -> tuple[int | None, int]:
            cur = await conn.execute(q.NEWEST_AND_XMIN)
            row = await cur.fetchone()
            assert row is not None
            return row[0], row[1]

        newest, xmin = await self._run(check)
        if newest is None or newest < xmin or newest < decode_position(after)[0]:
            return None
        return newest

    async def _wait_visible(self, xid: int) -> bool:
        """Wait (polling, up to ``visibility_timeout``) until every transaction up to ``xid`` has ended."""
        deadline = time.monotonic() + self.visibility_timeout
        delay = 0.001

        async def xmin(conn: Conn) -> int:
            row = await (await conn.execute(q.XMIN_ONLY)).fetchone()
            assert row is not None
            return int(row[0])

        while await self._run(xmin) <= xid:
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    async def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        check_read_bounds("$all", after, limit)
        names = check_categories(categories)
        self._check_open()
        remaining = limit
        waited = False
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None else min(_PAGE, remaining)
            events = await self._read_page(names, after, size)
            for event in events:
                yield event
            if events:
                after = events[-1].position
            if remaining is not None:
                remaining -= len(events)
            if len(events) < size:
                # The end of the visible log: wait (once, bounded) for events committed before this read
                # that an older, still-open transaction keeps invisible.
                if waited:
                    return
                waited = True
                pending = await self._pending(after)
                if pending is None or not await self._wait_visible(pending):
                    return

    async def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        check_read_bounds("$all", after, None)
        names = check_categories(categories)
        self._check_open()
        if self._listener is None:
            self._listener = Listener(self.conninfo, self.poll_interval)
        waiter = self._listener.register(names)
        try:
            short = 0.002
            while True:
                waiter.clear()
                events = await self._subscription_page(names, after)
                for event in events:
                    yield event
                if events:
                    after = events[-1].position
                    short = 0.002
                    if len(events) == _PAGE:
                        continue
                if await self._subscription_pending(after):
                    await asyncio.sleep(short)  # an older transaction is still open: it ends soon, or not
                    short = min(short * 2, 0.2)
                    continue
                await waiter.wait()
                self._check_open()
        finally:
            if self._listener is not None:
                await self._listener.unregister(waiter)

    async def _subscription_page(self, names: tuple[str, ...] | None, after: int) -> list[RecordedEvent]:
        """A page for a subscription: lost connections are retried forever (with backoff) until closed."""
        delay = 0.05
        while True:
            self._check_open()
            try:
                return await self._read_page(names, after, _PAGE)
            except StoreUnavailable as exc:
                if self._closed or not isinstance(exc.__cause__, psycopg.Error):
                    raise
                log.warning("subscription lost PostgreSQL (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    async def _subscription_pending(self, after: int) -> bool:
        try:
            return await self._pending(after) is not None
        except StoreUnavailable:
            if self._closed:
                raise
            return True  # retry soon through _subscription_page's backoff

    # -- point queries --------------------------------------------------------------------------

    async def stream_version(self, stream: str) -> int | None:
        check_stream_name(stream)

        async def version(conn: Conn) -> int | None:
            row = await (await conn.execute(q.STREAM_VERSION, (stream,))).fetchone()
            return None if row is None else row[0]

        return await self._run(version, stream)

    async def head_position(self) -> int:
        self._check_open()
        pending = await self._pending(0)
        if pending is not None:
            await self._wait_visible(pending)

        async def head(conn: Conn) -> int:
            row = await (await conn.execute(q.VISIBLE_HEAD)).fetchone()
            return 0 if row is None else encode_position(row[0], row[1])

        return await self._run(head)

    async def get_event(self, id: UUID) -> RecordedEvent | None:
        self._check_open()

        async def get(conn: Conn) -> RecordedEvent | None:
            async with conn.cursor(binary=True) as cur:
                await cur.execute(q.GET_EVENT, (id,))
                row = await cur.fetchone()
            return None if row is None else _row_all(row)

        return await self._run(get)

    async def visibility_lag(self) -> VisibilityLag:
        """How far ``read_all``/``subscribe`` trail the committed log right now, and why.

        Events become visible only when every transaction that started before them has ended, so a
        long-open transaction anywhere in the cluster (also one that never touches epoch) holds them back.
        """

        async def measure(conn: Conn) -> VisibilityLag:
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

        return await self._run(measure)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A pooled connection inside a transaction, committed when the block ends (rolled back on error).

        For exactly-once projections: update a read model and its checkpoint in one transaction.
        A lost connection raises ``StoreUnavailable``. Keep it short: while it is open (and has written),
        events committed after it started stay invisible to every reader.
        """
        self._check_open()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc

    async def migrate_schema(self) -> list[tuple[int, str]]:
        """Apply missing migrations now; returns the ``(version, description)`` pairs applied."""

        async def run(conn: Conn) -> list[tuple[int, str]]:
            return await apply_migrations(conn)

        return await self._run(run, retry=False)


async def migrate(url: str) -> tuple[int, int, list[tuple[int, str]]]:
    """Create or upgrade the schema the URL's database holds: ``(version before, version after, applied)``.

    What ``epoch migrate`` runs. Idempotent, and safe to run from several processes at once.
    """
    conninfo, _ = _parse_url(url)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            before = await schema_version(conn)
            if before > LATEST_VERSION:
                raise ConfigurationError(
                    f"the epoch schema is at version {before}, newer than this epoch ({LATEST_VERSION}): upgrade epoch"
                )
            applied = await apply_migrations(conn)
            return before, await schema_version(conn), applied
    except psycopg.Error as exc:
        raise _unavailable(exc) from exc
