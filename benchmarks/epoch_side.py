"""epoch doing each workload through its public API: ``open_store``, ``CommandHandler``, ``Codec``,
``ProjectionRunner``. Setup is untimed; each method returns the seconds its measured part took.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from benchmarks.backends import Backend
from benchmarks.domain import Deposit, Opened, codec, decider, deposit_event
from epoch import (
    NO_STREAM,
    CommandHandler,
    EventStore,
    NewEvent,
    Snapshots,
    StateCache,
    WrongExpectedVersion,
    open_store,
)

CATEGORY = "account"


def store_url(backend: Backend, location: str) -> str:
    if backend.name == "memory":
        return "memory://"
    if backend.name == "sqlite":
        return f"sqlite:///{location}?synchronous={backend.synchronous}"
    return location


def _metadata() -> dict[str, Any]:
    correlation = str(uuid.uuid4())
    return {"$correlation_id": correlation, "$causation_id": correlation}


def _batch(first: int, count: int, opened: bool) -> list[NewEvent]:
    meta = _metadata()
    events = [codec.encode(Opened("owner"), meta)] if opened else []
    events += [codec.encode(deposit_event(first + i), meta) for i in range(count - len(events))]
    return events


async def _fill_streams(store: EventStore, streams: int, per_stream: int) -> None:
    """``streams`` streams of ``per_stream`` events each (an Opened, then deposits), 1,000 events a call."""
    for s in range(streams):
        version: int | None = None
        written = 0
        while written < per_stream:
            chunk = min(1_000, per_stream - written)
            batch = _batch(written, chunk, opened=written == 0)
            await store.append(f"{CATEGORY}-{s}", batch, NO_STREAM if version is None else version)
            version = written + chunk - 1
            written += chunk


async def hot_commands(store: EventStore, tasks: int, commands: int) -> tuple[float, int]:
    """Deposits to ``account-0`` from ``tasks`` concurrent tasks through one default ``CommandHandler``."""
    handler = CommandHandler(store, decider, CATEGORY, codec)
    failures = 0

    async def task(t: int) -> None:
        nonlocal failures
        for i in range(t, commands, tasks):
            try:
                await handler.execute(0, Deposit(i % 100 + 1, f"ref-{i:08d}"))
            except WrongExpectedVersion:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(tasks)))
    return time.perf_counter() - started, failures


class EpochSide:
    impl = "epoch"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _open(self, location: str) -> EventStore:
        return await open_store(store_url(self.backend, location))

    async def commands(self, location: str, streams: int, commands: int, cached: bool) -> float:
        store = await self._open(location)
        try:
            await asyncio.gather(
                *(store.append(f"{CATEGORY}-{s}", _batch(0, 1, True), NO_STREAM) for s in range(streams))
            )
            handler = CommandHandler(store, decider, CATEGORY, codec, cache=StateCache() if cached else None)
            if cached:  # warm the cache as a running service would have it
                for s in range(streams):
                    await handler.load(s)
            execute = handler.execute
            started = time.perf_counter()
            for i in range(commands):
                await execute(i % streams, Deposit(i % 100 + 1, f"ref-{i:08d}"))
            return time.perf_counter() - started
        finally:
            await store.close()

    async def commands_on_stream(self, location: str, length: int, commands: int) -> float:
        """Cached commands on one stream that already holds ``length`` events."""
        store = await self._open(location)
        try:
            await _fill_streams(store, 1, length)
            handler = CommandHandler(store, decider, CATEGORY, codec)  # the cache is on by default
            await handler.load(0)
            started = time.perf_counter()
            for i in range(commands):
                await handler.execute(0, Deposit(i % 100 + 1, f"ref-{i:08d}"))
            return time.perf_counter() - started
        finally:
            await store.close()

    async def batch_append(self, location: str, events: int, batch_size: int) -> float:
        store = await self._open(location)
        try:
            encode = codec.encode
            started = time.perf_counter()
            for b in range(events // batch_size):
                meta = _metadata()
                batch = [encode(Opened("owner"), meta)]
                batch += [encode(deposit_event(i), meta) for i in range(1, batch_size)]
                await store.append(f"{CATEGORY}-{b}", batch, NO_STREAM)
            return time.perf_counter() - started
        finally:
            await store.close()

    async def rehydrate(self, location: str, length: int, loads: int, cached: bool) -> float:
        store = await self._open(location)
        try:
            await _fill_streams(store, 1, length)
            handler = CommandHandler(store, decider, CATEGORY, codec, cache=StateCache() if cached else None)
            if cached:
                await handler.load(0)
            started = time.perf_counter()
            for _ in range(loads):
                loaded = await handler.load(0)
            elapsed = time.perf_counter() - started
            assert loaded.version == length - 1
            return elapsed
        finally:
            await store.close()

    async def rehydrate_snapshots(self, location: str, length: int, every: int, loads: int, snapshots: bool) -> float:
        """Cold loads (no cache, a new handler each) of one ``length``-event stream. With ``snapshots``, the
        last ``every * 1.5`` events are written by commands with ``Snapshots(every=every)``, so the newest
        snapshot is at the last multiple of ``every`` (version 99,900 of 100,000: 99 events after it)."""
        store = await self._open(location)
        try:
            policy = Snapshots(every=every) if snapshots else None
            tail = every + every // 2 if snapshots else 0
            await _fill_streams(store, 1, length - tail)
            writer = CommandHandler(store, decider, CATEGORY, codec, snapshots=policy)
            for i in range(tail):
                await writer.execute(0, Deposit(i % 100 + 1, f"ref-{i:08d}"))
            elapsed = 0.0
            for _ in range(loads):  # a new handler without a cache: nothing of the writer's state is reused
                handler = CommandHandler(store, decider, CATEGORY, codec, cache=None, snapshots=policy)
                started = time.perf_counter()
                loaded = await handler.load(0)
                elapsed += time.perf_counter() - started
                assert loaded.version == length - 1
                assert loaded.state.deposits == length - 1
            return elapsed
        finally:
            await store.close()

    async def read_all(self, location: str, events: int) -> float:
        store = await self._open(location)
        try:
            await _fill_streams(store, events // 100, 100)
            decode = codec.decode
            count = 0
            started = time.perf_counter()
            async for recorded in store.read_all():
                decode(recorded)
                count += 1
            elapsed = time.perf_counter() - started
            assert count == events, count
            return elapsed
        finally:
            await store.close()

    async def subscribe_catchup(self, location: str, events: int) -> float:
        from epoch.projections import ProjectionRunner

        store = await self._open(location)
        try:
            await _fill_streams(store, events // 100, 100)
            view = _BalanceView()
            runner = ProjectionRunner(store, codec, [view])
            started = time.perf_counter()
            await runner.run_until_idle()
            elapsed = time.perf_counter() - started
            assert view.count == events, view.count
            return elapsed
        finally:
            await store.close()

    async def concurrent_writers(self, location: str, writers: int, streams: int, commands: int) -> float:
        store = await self._open(location)
        try:
            await asyncio.gather(
                *(store.append(f"{CATEGORY}-{s}", _batch(0, 1, True), NO_STREAM) for s in range(streams))
            )
            handler = CommandHandler(store, decider, CATEGORY, codec, cache=None)

            async def writer(w: int) -> None:
                for i in range(w, commands, writers):
                    await handler.execute(i % streams, Deposit(i % 100 + 1, f"ref-{i:08d}"))

            started = time.perf_counter()
            await asyncio.gather(*(writer(w) for w in range(writers)))
            return time.perf_counter() - started
        finally:
            await store.close()

    async def hot_stream(self, location: str, tasks: int, commands: int) -> tuple[float, int]:
        """``tasks`` concurrent tasks sending ``commands`` in all to ONE stream with a default handler;
        returns the seconds and how many commands failed (``WrongExpectedVersion`` after the retries)."""
        store = await self._open(location)
        try:
            await store.append(f"{CATEGORY}-0", _batch(0, 1, True), NO_STREAM)
            return await hot_commands(store, tasks, commands)
        finally:
            await store.close()

    async def hot_stream_processes(self, location: str, processes: int, tasks: int, commands: int) -> tuple[float, int]:
        """The same from ``processes`` OS processes of ``tasks`` tasks each, on one store."""
        store = await self._open(location)
        try:
            await store.append(f"{CATEGORY}-0", _batch(0, 1, True), NO_STREAM)
        finally:
            await store.close()
        from benchmarks.hot_worker import run_processes

        return run_processes(store_url(self.backend, location), processes, tasks, commands)

    async def dcb_claims(self, location: str, tasks: int, claims: int) -> float:
        """Conditional appends through ``DecisionHandler`` from ``tasks`` tasks (benchmarks/dcb_claims.py)."""
        from benchmarks.dcb_claims import epoch_claims

        store = await self._open(location)
        try:
            return await epoch_claims(store, tasks, claims)
        finally:
            await store.close()

    async def dcb_long(self, location: str, events: int, decisions: int, snapshots: bool) -> float:
        """Decisions over a query matching ``events`` events, without or with snapshots (benchmarks/dcb_long.py)."""
        from benchmarks.dcb_long import epoch_decisions

        store = await self._open(location)
        try:
            return await epoch_decisions(store, events, decisions, snapshots)
        finally:
            await store.close()

    async def fill(self, location: str, events: int) -> EventStore:
        store = await self._open(location)
        await _fill_streams(store, max(1, events // 1_000), min(events, 1_000))
        return store

    async def read_all_discard(self, store: EventStore) -> int:
        decode = codec.decode
        count = 0
        async for recorded in store.read_all():
            decode(recorded)
            count += 1
        return count


class _BalanceView:
    """The in-memory read model: a balance per stream."""

    name = "balances"

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.count = 0

    async def handle(self, envelope: Any) -> None:
        self.count += 1
        event = envelope.data
        if type(event) is not Opened:
            self.balances[envelope.stream] = self.balances.get(envelope.stream, 0) + event.amount
