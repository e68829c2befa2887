"""The ceiling in memory: plain Python lists and dicts holding the same rows, ``json`` for the payloads."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from benchmarks.backends import Backend
from benchmarks.domain import deposit_dict, raw_evolve, raw_metadata

Row = tuple[str, int, int, bytes, str, bytes, bytes, int]  # stream, version, position, id, type, data, metadata, at


class _Log:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.streams: dict[str, list[Row]] = {}

    def append(self, stream: str, expected: int, items: list[tuple[str, bytes, bytes]]) -> None:
        rows = self.streams.setdefault(stream, [])
        if len(rows) - 1 != expected:
            raise RuntimeError("wrong expected version")
        now = time.time_ns() // 1000
        for type_name, data, metadata in items:
            row = (stream, len(rows), len(self.rows) + 1, uuid.uuid4().bytes, type_name, data, metadata, now)
            rows.append(row)
            self.rows.append(row)


def _items(count: int, first: int = 0) -> list[tuple[str, bytes, bytes]]:
    metadata = raw_metadata()
    items = [("Opened", json.dumps({"owner": "owner"}).encode(), metadata)] if first == 0 else []
    items += [("Deposited", json.dumps(deposit_dict(first + i)).encode(), metadata) for i in range(len(items), count)]
    return items


class RawMemorySide:
    impl = "raw"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _fill(self, log: _Log, streams: int, per_stream: int) -> None:
        for s in range(streams):
            log.append(f"account-{s}", -1, _items(per_stream))

    def _load(self, log: _Log, stream: str, cache: dict[str, Any] | None) -> tuple[tuple[int, int], int]:
        state, version = (0, 0), -1
        if cache is not None and stream in cache:
            state, version = cache[stream]
        for row in log.streams.get(stream, ())[version + 1 :]:
            state = raw_evolve(state, row[4], json.loads(row[5]))
            version = row[1]
        return state, version

    def _command(self, log: _Log, stream: str, i: int, cache: dict[str, Any] | None) -> None:
        state, version = self._load(log, stream, cache)
        data = deposit_dict(i)
        log.append(stream, version, [("Deposited", json.dumps(data).encode(), raw_metadata())])
        if cache is not None:
            cache[stream] = (raw_evolve(state, "Deposited", data), version + 1)

    async def commands(self, location: str, streams: int, commands: int, cached: bool) -> float:
        log = _Log()
        self._fill(log, streams, 1)
        cache: dict[str, Any] | None = {} if cached else None
        if cache is not None:
            for s in range(streams):
                cache[f"account-{s}"] = self._load(log, f"account-{s}", None)
        started = time.perf_counter()
        for i in range(commands):
            self._command(log, f"account-{i % streams}", i, cache)
        return time.perf_counter() - started

    async def commands_on_stream(self, location: str, length: int, commands: int) -> float:
        log = _Log()
        self._fill(log, 1, length)
        cache = {"account-0": self._load(log, "account-0", None)}
        started = time.perf_counter()
        for i in range(commands):
            self._command(log, "account-0", i, cache)
        return time.perf_counter() - started

    async def batch_append(self, location: str, events: int, batch_size: int) -> float:
        log = _Log()
        started = time.perf_counter()
        for b in range(events // batch_size):
            log.append(f"account-{b}", -1, _items(batch_size))
        return time.perf_counter() - started

    async def rehydrate(self, location: str, length: int, loads: int, cached: bool) -> float:
        log = _Log()
        self._fill(log, 1, length)
        cache: dict[str, Any] | None = {} if cached else None
        if cache is not None:
            cache["account-0"] = self._load(log, "account-0", None)
        started = time.perf_counter()
        for _ in range(loads):
            _state, version = self._load(log, "account-0", cache)
        elapsed = time.perf_counter() - started
        assert version == length - 1
        return elapsed

    def _read(self, log: _Log, handle: Any = None) -> int:
        loads = json.loads
        count = 0
        for row in log.rows:
            event = loads(row[5])
            if row[6]:
                loads(row[6])
            if handle is not None:
                handle(row[0], row[4], event)
            count += 1
        return count

    async def read_all(self, location: str, events: int) -> float:
        log = _Log()
        self._fill(log, events // 100, 100)
        started = time.perf_counter()
        count = self._read(log)
        elapsed = time.perf_counter() - started
        assert count == events
        return elapsed

    async def subscribe_catchup(self, location: str, events: int) -> float:
        log = _Log()
        self._fill(log, events // 100, 100)
        balances: dict[str, int] = {}

        def handle(stream: str, type_name: str, event: dict[str, Any]) -> None:
            if type_name == "Deposited":
                balances[stream] = balances.get(stream, 0) + event["amount"]

        started = time.perf_counter()
        count = self._read(log, handle)
        elapsed = time.perf_counter() - started
        assert count == events
        return elapsed

    async def fill(self, location: str, events: int) -> Any:
        log = _Log()
        self._fill(log, max(1, events // 1_000), min(events, 1_000))
        return log

    async def read_all_discard(self, log: Any) -> int:
        return self._read(log)
