"""The ceiling on SQLite: the same rows with the plain ``sqlite3`` driver, ``executemany`` for batches, a
plain ``SELECT`` plus ``json.loads`` for reads. No framework, no checks beyond what the unique indexes
enforce. The table has epoch 0.1's columns and indexes; epoch's own schema also keeps a ``streams`` row per
stream (version, deletes, limits), a type index and a ``tags`` column, which this side does not pay for.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

from benchmarks.backends import Backend
from benchmarks.domain import deposit_dict, raw_event, raw_evolve, raw_metadata
from benchmarks.harness import timed_threads

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, id BLOB NOT NULL UNIQUE,
        type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, category TEXT NOT NULL,
        recorded_at INTEGER NOT NULL, UNIQUE (stream, version))""",
    "CREATE INDEX IF NOT EXISTS events_category ON events (category, position)",
)
_INSERT = (
    "INSERT INTO events (stream, version, id, type, data, metadata, category, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_STREAM = "SELECT version, type, data FROM events WHERE stream = ? AND version > ? ORDER BY version"
_SELECT_ALL = "SELECT position, stream, version, id, type, data, metadata, recorded_at FROM events ORDER BY position"


def _row(stream: str, version: int, index: int, metadata: bytes, now: int) -> tuple[Any, ...]:
    type_name, data = raw_event(version, index)
    return (stream, version, uuid.uuid4().bytes, type_name, data, metadata, "account", now)


def _threads(
    connect: Callable[[int], sqlite3.Connection],
    writers: int,
    streams: int,
    commands: int,
    command: Callable[[sqlite3.Connection, str, int, None], None],
) -> float:
    connections = [connect(w) for w in range(writers)]
    try:

        def writer(w: int) -> None:
            for i in range(w, commands, writers):
                command(connections[w], f"account-{i % streams}", i, None)

        return timed_threads(writer, writers)
    finally:
        for conn in connections:
            conn.close()


class RawSQLiteSide:
    impl = "raw"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _connect(self, location: str) -> sqlite3.Connection:
        # 60 s: concurrent writers wait for the write lock rather than fail (as the other sides do)
        conn = sqlite3.connect(location, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.backend.synchronous}")
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    def _fill(self, conn: sqlite3.Connection, streams: int, per_stream: int) -> None:
        now = time.time_ns() // 1000
        for s in range(streams):
            metadata = raw_metadata()
            for first in range(0, per_stream, 1_000):
                rows = [_row(f"account-{s}", v, v, metadata, now) for v in range(first, min(per_stream, first + 1_000))]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")

    def _command(self, conn: sqlite3.Connection, stream: str, i: int, cache: dict[str, Any] | None) -> None:
        state, version = (0, 0), -1
        if cache is not None and stream in cache:
            state, version = cache[stream]
        conn.execute("BEGIN IMMEDIATE")
        for row_version, type_name, data in conn.execute(_SELECT_STREAM, (stream, version)):
            state = raw_evolve(state, type_name, json.loads(data))
            version = row_version
        data = deposit_dict(i)
        conn.execute(
            _INSERT,
            (
                stream,
                version + 1,
                uuid.uuid4().bytes,
                "Deposited",
                json.dumps(data).encode(),
                raw_metadata(),
                "account",
                time.time_ns() // 1000,
            ),
        )
        conn.execute("COMMIT")
        if cache is not None:
            cache[stream] = (raw_evolve(state, "Deposited", data), version + 1)

    async def commands(self, location: str, streams: int, commands: int, cached: bool) -> float:
        conn = self._connect(location)
        try:
            self._fill(conn, streams, 1)
            cache: dict[str, Any] | None = {} if cached else None
            if cache is not None:
                for s in range(streams):
                    cache[f"account-{s}"] = ((0, 0), 0)
            started = time.perf_counter()
            for i in range(commands):
                self._command(conn, f"account-{i % streams}", i, cache)
            return time.perf_counter() - started
        finally:
            conn.close()

    async def commands_on_stream(self, location: str, length: int, commands: int) -> float:
        conn = self._connect(location)
        try:
            self._fill(conn, 1, length)
            cache: dict[str, Any] = {}
            self._load(conn, "account-0", cache)
            started = time.perf_counter()
            for i in range(commands):
                self._command(conn, "account-0", i, cache)
            return time.perf_counter() - started
        finally:
            conn.close()

    async def batch_append(self, location: str, events: int, batch_size: int) -> float:
        conn = self._connect(location)
        try:
            started = time.perf_counter()
            for b in range(events // batch_size):
                now = time.time_ns() // 1000
                metadata = raw_metadata()
                rows = [_row(f"account-{b}", v, v, metadata, now) for v in range(batch_size)]
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            conn.close()

    def _load(self, conn: sqlite3.Connection, stream: str, cache: dict[str, Any] | None) -> tuple[int, int]:
        state, version = (0, 0), -1
        if cache is not None and stream in cache:
            state, version = cache[stream]
        for row_version, type_name, data in conn.execute(_SELECT_STREAM, (stream, version)):
            state = raw_evolve(state, type_name, json.loads(data))
            version = row_version
        if cache is not None:
            cache[stream] = (state, version)
        return state

    async def rehydrate(self, location: str, length: int, loads: int, cached: bool) -> float:
        conn = self._connect(location)
        try:
            self._fill(conn, 1, length)
            cache: dict[str, Any] | None = {} if cached else None
            if cache is not None:
                self._load(conn, "account-0", cache)
            started = time.perf_counter()
            for _ in range(loads):
                state = self._load(conn, "account-0", cache)
            elapsed = time.perf_counter() - started
            assert state[1] == length - 1, state
            return elapsed
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection, handle: Any = None) -> int:
        count = 0
        loads = json.loads
        for _position, stream, _version, _id, type_name, data, metadata, _at in conn.execute(_SELECT_ALL):
            event = loads(data)
            if metadata:
                loads(metadata)
            if handle is not None:
                handle(stream, type_name, event)
            count += 1
        return count

    async def read_all(self, location: str, events: int) -> float:
        conn = self._connect(location)
        try:
            self._fill(conn, events // 100, 100)
            started = time.perf_counter()
            count = self._read(conn)
            elapsed = time.perf_counter() - started
            assert count == events, count
            return elapsed
        finally:
            conn.close()

    async def subscribe_catchup(self, location: str, events: int) -> float:
        conn = self._connect(location)
        try:
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
        finally:
            conn.close()

    async def concurrent_writers(self, location: str, writers: int, streams: int, commands: int) -> float:
        """``writers`` threads, each with its own connection and one transaction per command."""
        with closing(self._connect(location)) as conn:
            self._fill(conn, streams, 1)
        return _threads(lambda w: self._connect(location), writers, streams, commands, self._command)

    async def hot_stream(self, location: str, tasks: int, commands: int) -> tuple[float, int]:
        """``tasks`` threads on ONE stream: ``BEGIN IMMEDIATE`` takes the write lock before the read, so
        the threads take turns and none can fail (the pessimistic ceiling)."""
        with closing(self._connect(location)) as conn:
            self._fill(conn, 1, 1)
        return _threads(lambda w: self._connect(location), tasks, 1, commands, self._command), 0

    async def fill(self, location: str, events: int) -> Any:
        conn = self._connect(location)
        self._fill(conn, max(1, events // 1_000), min(events, 1_000))
        return conn

    async def read_all_discard(self, conn: Any) -> int:
        return self._read(conn)
