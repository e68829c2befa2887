"""The ``eventsourcing`` library doing the same work, as its users run it: an ``Application`` with its
repository, aggregates with ``@event`` methods, its recorders for reading the log.

SQLite: its own connection pool (WAL) with the same ``synchronous`` level as the other sides (its default
is SQLite's, FULL). PostgreSQL: the same server. Memory: its default POPO recorders.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.backends import Backend
from benchmarks.domain import NOTE
from benchmarks.harness import timed_threads


def _env(backend: Backend, location: str, cached: bool = False, pool: int | None = None) -> dict[str, str]:
    env: dict[str, str] = {}
    if backend.name == "sqlite":
        env.update(PERSISTENCE_MODULE="eventsourcing.sqlite", SQLITE_DBNAME=location)
    elif backend.name == "postgres":
        parts = urlsplit(location)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_DBNAME=parts.path.lstrip("/"),
            POSTGRES_HOST=parts.hostname or "127.0.0.1",
            POSTGRES_PORT=str(parts.port or 5432),
            POSTGRES_USER=parts.username or "postgres",
            POSTGRES_PASSWORD=parts.password or "",
        )
        if pool is not None:
            env.update(POSTGRES_POOL_SIZE=str(pool), POSTGRES_MAX_OVERFLOW="0")
    if cached:
        env.update(AGGREGATE_CACHE_MAXSIZE="10000")  # AGGREGATE_CACHE_FASTFORWARD defaults to on
    return env


class EventsourcingSide:
    impl = "eventsourcing"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _app(self, location: str, cached: bool = False, pool: int | None = None) -> Any:
        from benchmarks.es_domain import Bank

        app = Bank(env=_env(self.backend, location, cached, pool))
        if self.backend.name == "sqlite":
            # Same durability as the other sides: set the level on each of its pooled connections.
            _set_synchronous(app, self.backend.synchronous)
        return app

    def _accounts(self, app: Any, streams: int, per_stream: int = 1) -> list[Any]:
        from benchmarks.es_domain import EsAccount

        ids = []
        pending = []
        for _ in range(streams):
            account = EsAccount("owner")
            for i in range(1, per_stream):
                account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
            pending.append(account)
            ids.append(account.id)
            if sum(a.version for a in pending) >= 1_000:
                app.save(*pending)
                pending = []
        if pending:
            app.save(*pending)
        return ids

    async def commands(self, location: str, streams: int, commands: int, cached: bool) -> float:
        app = self._app(location, cached)
        try:
            ids = self._accounts(app, streams)
            get, save = app.repository.get, app.save
            if cached:
                for account_id in ids:
                    get(account_id)
            started = time.perf_counter()
            for i in range(commands):
                account = get(ids[i % streams])
                account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
                save(account)
            return time.perf_counter() - started
        finally:
            app.close()

    async def commands_on_stream(self, location: str, length: int, commands: int) -> float:
        app = self._app(location, cached=True)
        try:
            (account_id,) = self._accounts(app, 1, length)
            get, save = app.repository.get, app.save
            get(account_id)
            started = time.perf_counter()
            for i in range(commands):
                account = get(account_id)
                account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
                save(account)
            return time.perf_counter() - started
        finally:
            app.close()

    async def batch_append(self, location: str, events: int, batch_size: int) -> float:
        from benchmarks.es_domain import EsAccount

        app = self._app(location)
        try:
            started = time.perf_counter()
            for _ in range(events // batch_size):
                account = EsAccount("owner")
                for i in range(1, batch_size):
                    account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
                app.save(account)
            return time.perf_counter() - started
        finally:
            app.close()

    async def rehydrate(self, location: str, length: int, loads: int, cached: bool) -> float:
        app = self._app(location, cached)
        try:
            (account_id,) = self._accounts(app, 1, length)
            get = app.repository.get
            if cached:
                get(account_id)
            started = time.perf_counter()
            for _ in range(loads):
                account = get(account_id)
            elapsed = time.perf_counter() - started
            assert account.version == length, account.version
            return elapsed
        finally:
            app.close()

    async def rehydrate_snapshots(self, location: str, length: int, every: int, loads: int, snapshots: bool) -> float:
        """Cold loads (no aggregate cache: each reads the recorder) of one ``length``-event account; with ``snapshots``
        an application with ``snapshotting_intervals = {EsAccount: 100}`` wrote it, so its newest snapshot
        is at its 100,000th event (its versions count from 1: none to read after it)."""
        from benchmarks.es_domain import Bank, SnapshottingBank

        assert every == 100, "SnapshottingBank snapshots every 100 versions"
        app = (SnapshottingBank if snapshots else Bank)(env=_env(self.backend, location))  # no aggregate cache
        if self.backend.name == "sqlite":
            _set_synchronous(app, self.backend.synchronous)
        try:
            account_id = self._long_account(app, length)
            get = app.repository.get
            elapsed = 0.0
            for _ in range(loads):
                started = time.perf_counter()
                account = get(account_id)
                elapsed += time.perf_counter() - started
                assert account.version == length, account.version
                assert account.deposits == length - 1
            return elapsed
        finally:
            app.close()

    def _long_account(self, app: Any, length: int) -> Any:
        """One account of ``length`` events saved 1,000 at a time, as epoch's side appends them (one save of
        100,000 events takes the library's PostgreSQL recorder tens of minutes)."""
        from benchmarks.es_domain import EsAccount

        account = EsAccount("owner")
        for i in range(1, length):
            account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
            if (i + 1) % 1_000 == 0:
                app.save(account)
        app.save(account)
        return account.id

    def _read(self, app: Any, handle: Any = None, page: int = 1_000) -> int:
        select, to_domain_event = app.recorder.select_notifications, app.mapper.to_domain_event
        count = 0
        start = 1
        while True:
            notifications = select(start, page)
            if not notifications:
                return count
            for notification in notifications:
                event = to_domain_event(notification)
                if handle is not None:
                    handle(event)
            count += len(notifications)
            start = notifications[-1].id + 1

    async def read_all(self, location: str, events: int) -> float:
        app = self._app(location)
        try:
            self._accounts(app, events // 100, 100)
            started = time.perf_counter()
            count = self._read(app)
            elapsed = time.perf_counter() - started
            assert count == events, count
            return elapsed
        finally:
            app.close()

    async def subscribe_catchup(self, location: str, events: int) -> float:
        """Its pull model (as its process applications catch up): pages of notifications, mapped to events."""
        app = self._app(location)
        try:
            self._accounts(app, events // 100, 100)
            balances: dict[Any, int] = {}
            seen = 0

            def handle(event: Any) -> None:
                nonlocal seen
                seen += 1
                amount = getattr(event, "amount", None)
                if amount is not None:
                    balances[event.originator_id] = balances.get(event.originator_id, 0) + amount

            started = time.perf_counter()
            self._read(app, handle)
            elapsed = time.perf_counter() - started
            assert seen == events, seen
            return elapsed
        finally:
            app.close()

    async def concurrent_writers(self, location: str, writers: int, streams: int, commands: int) -> float:
        app = self._app(location, pool=writers)
        try:
            ids = self._accounts(app, streams)
            get, save = app.repository.get, app.save

            def writer(w: int) -> None:
                for i in range(w, commands, writers):
                    account = get(ids[i % streams])
                    account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
                    save(account)

            return timed_threads(writer, writers)
        finally:
            app.close()

    async def hot_stream(self, location: str, tasks: int, commands: int) -> tuple[float, int]:
        """``tasks`` threads depositing to ONE account, each get/deposit/save as its users write it; a save
        that lost the race raises the library's ``IntegrityError`` (it does not retry): counted, not retried."""
        from eventsourcing.persistence import IntegrityError

        app = self._app(location, pool=tasks)
        failures = 0
        lock = threading.Lock()
        try:
            (account_id,) = self._accounts(app, 1)
            get, save = app.repository.get, app.save

            def writer(w: int) -> None:
                nonlocal failures
                for i in range(w, commands, tasks):
                    account = get(account_id)
                    account.deposit(i % 100 + 1, f"ref-{i:08d}", NOTE)
                    try:
                        save(account)
                    except IntegrityError:
                        with lock:
                            failures += 1

            return timed_threads(writer, tasks), failures
        finally:
            app.close()

    async def dcb_claims(self, location: str, tasks: int, claims: int) -> float:
        """Conditional appends through its DCB recorder from ``tasks`` threads (benchmarks/dcb_claims.py)."""
        from benchmarks.dcb_claims import es_claims

        return es_claims(self.backend.name, location, tasks, claims)

    async def dcb_long(self, location: str, events: int, decisions: int, snapshots: bool) -> float:
        """The same decisions through its DCB recorder; it has no snapshots of a query's state, so both
        variants fold the whole query (benchmarks/dcb_long.py)."""
        from eventsourcing.dcb.application import DCBApplication

        from benchmarks.dcb_claims import es_env
        from benchmarks.dcb_long import es_decisions

        app: Any = DCBApplication(env=es_env(self.backend.name, location))
        try:
            return es_decisions(app, events, decisions)
        finally:
            app.close()

    async def fill(self, location: str, events: int) -> Any:
        app = self._app(location)
        self._accounts(app, max(1, events // 1_000), min(events, 1_000))
        return app

    async def read_all_discard(self, app: Any) -> int:
        return self._read(app)


def _set_synchronous(app: Any, level: str) -> None:
    pool = app.recorder.datastore.pool
    original = pool._create_connection

    def create() -> Any:
        connection = original()
        connection._sqlite_conn.execute(f"PRAGMA synchronous = {level}")
        return connection

    pool._create_connection = create
    for connection in list(pool._pool) + list(pool._in_use):  # made before the patch (table creation)
        connection._sqlite_conn.execute(f"PRAGMA synchronous = {level}")
