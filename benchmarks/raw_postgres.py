"""The ceiling on PostgreSQL: the same rows with plain psycopg (sync): ``COPY`` for batches,
``executemany`` for fills, a plain ``SELECT`` plus ``json.loads`` for reads. No global-order guarantee
beyond a ``bigserial`` (it has the sequence-gap problem epoch's store solves), no framework.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from benchmarks.backends import Backend
from benchmarks.domain import deposit_dict, raw_event, raw_evolve, raw_metadata
from benchmarks.harness import timed_threads

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        position bigserial PRIMARY KEY, stream text NOT NULL, version bigint NOT NULL, id uuid NOT NULL UNIQUE,
        type text NOT NULL, data bytea NOT NULL, metadata bytea NOT NULL, category text NOT NULL,
        recorded_at timestamptz NOT NULL, UNIQUE (stream, version))""",
    "CREATE INDEX IF NOT EXISTS events_category ON events (category, position)",
)
_INSERT = (
    "INSERT INTO events (stream, version, id, type, data, metadata, category, recorded_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_COPY = "COPY events (stream, version, id, type, data, metadata, category, recorded_at) FROM STDIN"
_SELECT_STREAM = "SELECT version, type, data FROM events WHERE stream = %s AND version > %s ORDER BY version"
_SELECT_ALL = "SELECT position, stream, version, id, type, data, metadata, recorded_at FROM events ORDER BY position"


def _row(stream: str, version: int, index: int, metadata: bytes, now: datetime) -> tuple[Any, ...]:
    type_name, data = raw_event(version, index)
    return (stream, version, uuid.uuid4(), type_name, data, metadata, "account", now)


class RawPostgresSide:
    impl = "raw"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _connect(self, location: str) -> Any:
        import psycopg

        conn = psycopg.connect(location, autocommit=True, prepare_threshold=0)
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    def _fill(self, conn: Any, streams: int, per_stream: int) -> None:
        now = datetime.now(UTC)
        for s in range(streams):
            metadata = raw_metadata()
            for first in range(0, per_stream, 1_000):
                rows = [_row(f"account-{s}", v, v, metadata, now) for v in range(first, min(per_stream, first + 1_000))]
                with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY) as copy:
                    for row in rows:
                        copy.write_row(row)

    def _command(self, conn: Any, stream: str, i: int, cache: dict[str, Any] | None, lock: bool = False) -> None:
        state, version = (0, 0), -1
        if cache is not None and stream in cache:
            state, version = cache[stream]
        data = deposit_dict(i)
        with conn.transaction():
            if lock:  # writers of one stream take turns (else they would collide on (stream, version))
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (stream,))
            for row_version, type_name, payload in conn.execute(_SELECT_STREAM, (stream, version)):
                state = raw_evolve(state, type_name, json.loads(payload))
                version = row_version
            conn.execute(
                _INSERT,
                (
                    stream,
                    version + 1,
                    uuid.uuid4(),
                    "Deposited",
                    json.dumps(data).encode(),
                    raw_metadata(),
                    "account",
                    datetime.now(UTC),
                ),
            )
        if cache is not None:
            cache[stream] = (raw_evolve(state, "Deposited", data), version + 1)

    async def commands(self, location: str, streams: int, commands: int, cached: bool) -> float:
        with self._connect(location) as conn:
            self._fill(conn, streams, 1)
            cache: dict[str, Any] | None = {f"account-{s}": ((0, 0), 0) for s in range(streams)} if cached else None
            started = time.perf_counter()
            for i in range(commands):
                self._command(conn, f"account-{i % streams}", i, cache)
            return time.perf_counter() - started

    async def commands_on_stream(self, location: str, length: int, commands: int) -> float:
        with self._connect(location) as conn:
            self._fill(conn, 1, length)
            cache: dict[str, Any] = {}
            self._load(conn, "account-0", cache)
            started = time.perf_counter()
            for i in range(commands):
                self._command(conn, "account-0", i, cache)
            return time.perf_counter() - started

    async def batch_append(self, location: str, events: int, batch_size: int) -> float:
        with self._connect(location) as conn:
            started = time.perf_counter()
            for b in range(events // batch_size):
                now = datetime.now(UTC)
                metadata = raw_metadata()
                rows = [_row(f"account-{b}", v, v, metadata, now) for v in range(batch_size)]
                with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY) as copy:
                    for row in rows:
                        copy.write_row(row)
            return time.perf_counter() - started

    def _load(self, conn: Any, stream: str, cache: dict[str, Any] | None) -> tuple[tuple[int, int], int]:
        state, version = (0, 0), -1
        if cache is not None and stream in cache:
            state, version = cache[stream]
        for row_version, type_name, payload in conn.execute(_SELECT_STREAM, (stream, version)):
            state = raw_evolve(state, type_name, json.loads(payload))
            version = row_version
        if cache is not None:
            cache[stream] = (state, version)
        return state, version

    async def rehydrate(self, location: str, length: int, loads: int, cached: bool) -> float:
        with self._connect(location) as conn:
            self._fill(conn, 1, length)
            cache: dict[str, Any] | None = {} if cached else None
            if cache is not None:
                self._load(conn, "account-0", cache)
            started = time.perf_counter()
            for _ in range(loads):
                _state, version = self._load(conn, "account-0", cache)
            elapsed = time.perf_counter() - started
            assert version == length - 1, version
            return elapsed

    def _read(self, conn: Any, handle: Any = None, streaming: bool = False) -> int:
        loads = json.loads
        count = 0
        if streaming:  # a server-side cursor, so the client holds one page at a time
            with conn.transaction(), conn.cursor(name="read_all") as cur:
                cur.itersize = 1_000
                cur.execute(_SELECT_ALL)
                for row in cur:
                    loads(row[5])
                    if row[6]:
                        loads(row[6])
                    count += 1
            return count
        for _position, stream, _version, _id, type_name, data, metadata, _at in conn.execute(_SELECT_ALL):
            event = loads(data)
            if metadata:
                loads(metadata)
            if handle is not None:
                handle(stream, type_name, event)
            count += 1
        return count

    async def read_all(self, location: str, events: int) -> float:
        with self._connect(location) as conn:
            self._fill(conn, events // 100, 100)
            started = time.perf_counter()
            count = self._read(conn)
            elapsed = time.perf_counter() - started
            assert count == events, count
            return elapsed

    async def subscribe_catchup(self, location: str, events: int) -> float:
        with self._connect(location) as conn:
            self._fill(conn, events // 100, 100)
            balances: dict[str, int] = {}

            def handle(stream: str, type_name: str, event: dict[str, Any]) -> None:
                if type_name == "Deposited":
                    balances[stream] = balances.get(stream, 0) + event["amount"]

            started = time.perf_counter()
            count = self._read(conn, handle)
            elapsed = time.perf_counter() - started
            assert count == events, count
            return elapsed

    async def concurrent_writers(
        self, location: str, writers: int, streams: int, commands: int, lock: bool = False
    ) -> float:
        with self._connect(location) as conn:
            self._fill(conn, streams, 1)
        connections = [self._connect(location) for _ in range(writers)]
        try:

            def writer(w: int) -> None:
                for i in range(w, commands, writers):
                    self._command(connections[w], f"account-{i % streams}", i, None, lock)

            return timed_threads(writer, writers)
        finally:
            for conn in connections:
                conn.close()

    async def hot_stream(self, location: str, tasks: int, commands: int) -> tuple[float, int]:
        """``tasks`` threads on ONE stream, each command in a transaction that locks the stream's rows
        (an advisory lock on its name), so the threads take turns and none can fail (the pessimistic ceiling)."""
        return await self.concurrent_writers(location, tasks, 1, commands, lock=True), 0

    async def fill(self, location: str, events: int) -> Any:
        conn = self._connect(location)
        self._fill(conn, max(1, events // 1_000), min(events, 1_000))
        return conn

    async def read_all_discard(self, conn: Any) -> int:
        return self._read(conn, streaming=True)
