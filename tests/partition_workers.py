"""The processes the partition tests start inside app hosts (see tests/netns.py).

``python -m tests.partition_workers KIND URL ...``:

- ``lease URL PARTITIONS``: one :class:`PartitionedRunner` of the ``handled`` projection (each event a row
  with the process id; each batch's time span in ``batches``); prints ``ready``.
- ``writer URL``: operations until a line arrives on stdin, appends (even) and commands (odd), each
  retried with the same event ids / ``command_id`` after ``StoreUnavailable`` until it succeeds; one JSON
  line per operation.
- ``probe URL``: prints ``ready`` after one append, then for each line read from stdin one append and a
  JSON line with its outcome and the seconds it took.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

from epoch._idempotency import event_id_for
from epoch.errors import StoreUnavailable
from epoch.examples.users import AddUser, UserService, codec
from epoch.projections.scaleout import PartitionedRunner, partition_of
from epoch.records import ExpectedVersion, NewEvent
from epoch.stores import EventStore, Transaction, open_store

IDS = uuid.UUID("6f1c0a52-8a7e-4d43-9d7b-0e3e3f0c5a11")
"""The namespace of the writer's event ids: the test derives the same ids to check what was stored."""

APPEND_STREAMS = 4


def event_id(i: int) -> uuid.UUID:
    return uuid.uuid5(IDS, f"append-{i}")


class Handled:
    name = "handled"
    categories = "users"

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    async def setup(self, tx: Transaction) -> None:
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS handled (seq BIGSERIAL PRIMARY KEY, stream TEXT, version INT,"
            " partition INT, pid INT)"
        )
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS batches (partition INT, pid INT, started TIMESTAMPTZ, ended TIMESTAMPTZ)"
        )

    async def handle_in_transaction(self, envelope: Any, tx: Transaction) -> None:
        partition = partition_of(envelope.stream, self.partitions)
        [[started]] = await tx.execute("SELECT clock_timestamp()")
        await tx.execute(
            "INSERT INTO handled (stream, version, partition, pid) VALUES (?, ?, ?, ?)",
            [envelope.stream, envelope.version, partition, os.getpid()],
        )
        await asyncio.sleep(0.01)
        await tx.execute("INSERT INTO batches VALUES (?, ?, ?, clock_timestamp())", [partition, os.getpid(), started])


async def lease(url: str, partitions: int) -> None:
    async with open_store(url) as store:
        runner = PartitionedRunner(
            store, codec, Handled(partitions), partitions, batch_size=20, poll_interval=0.05, rebalance_interval=0.3
        )
        print("ready", flush=True)
        await runner.run()


async def _stored(store: EventStore, i: int) -> bool:
    """Whether operation ``i`` is stored already (asked after a failure, before the retry)."""
    if i % 2 == 0:
        return await store.get_event(event_id(i), f"amb-{i // 2 % APPEND_STREAMS}") is not None
    stream = f"users-x{i // 2 % APPEND_STREAMS}"
    return await store.get_event(event_id_for(f"cmd-{i}", stream, 0), stream) is not None


async def writer(url: str) -> None:
    stop = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    async with open_store(url) as store:
        services = [UserService(store, f"x{d}") for d in range(APPEND_STREAMS)]
        versions = [-1] * APPEND_STREAMS
        print("ready", flush=True)
        for i in itertools.count():
            if stop.is_set():
                break
            failures, stored_before_retry = 0, None
            while True:
                try:
                    if i % 2 == 0:
                        s = i // 2 % APPEND_STREAMS
                        event = NewEvent("Noted", json.dumps({"i": i}).encode(), id=event_id(i))
                        expected = ExpectedVersion.NO_STREAM if versions[s] < 0 else versions[s]
                        result = await store.append(f"amb-{s}", [event], expected)
                        assert result.version is not None
                        versions[s] = result.version
                        outcome: dict[str, Any] = {"version": result.version, "positions": list(result.positions)}
                    else:
                        command = AddUser(f"user{i}")
                        executed = await services[i // 2 % APPEND_STREAMS].add_user(command, command_id=f"cmd-{i}")
                        outcome = {"version": executed.version, "position": executed.position}
                    break
                except StoreUnavailable:
                    failures += 1
                    await asyncio.sleep(0.2)
                    while stored_before_retry is None:
                        try:
                            stored_before_retry = await _stored(store, i)
                        except StoreUnavailable:
                            await asyncio.sleep(0.2)
            line = {"i": i, "failures": failures, "stored_before_retry": stored_before_retry, **outcome}
            print(json.dumps(line), flush=True)


async def probe(url: str) -> None:
    async with open_store(url) as store:
        await store.append("probe", [NewEvent("Probed", b"{}")])
        print("ready", flush=True)
        for _ in iter(sys.stdin.readline, ""):
            started = time.monotonic()
            try:
                await store.append("probe", [NewEvent("Probed", b"{}")])
                outcome = "ok"
            except StoreUnavailable as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    kind, url, *rest = sys.argv[1:]
    if kind == "lease":
        asyncio.run(lease(url, int(rest[0])))
    elif kind == "writer":
        asyncio.run(writer(url))
    else:
        asyncio.run(probe(url))
