"""``dcb_claims``: conditional appends per second (dynamic consistency boundaries, issue 13).

Each claim is one decision over a tag of its own: read the events tagged ``claim:{key}`` (none yet),
decide that the key is free, and append a ``Claimed`` event (~200 bytes of JSON) on the condition that
no event with that tag was recorded since the read. Keys are fresh, so no claim conflicts with another:
the figure is the cost of the read and the conditional append, sequentially (1 task) and from
concurrent tasks or threads (which share the store's locks and connections, as a service would).

epoch: ``DecisionHandler`` (decider, codec, metadata, tags) through the public API. eventsourcing: its
``dcb`` recorders used directly (``read`` then ``append`` with a ``DCBAppendCondition``: its fastest path,
below its ``DCBApplication``), with JSON by the standard library. It has an in-memory recorder
(``eventsourcing.dcb.popo``) and a PostgreSQL one (``eventsourcing.dcb.postgres_tt``, which locks the events
table for each conditional append) but none for SQLite, so on SQLite epoch runs alone. A store whose DCB
entries raise ``NotSupported`` is skipped with a note.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from benchmarks.backends import Backend
from benchmarks.domain import NOTE
from benchmarks.harness import timed_threads
from epoch import Codec, Decider, DecisionHandler, EventStore, NotSupported, Query, QueryItem, open_store

DCB_RECORDERS = {"memory": "eventsourcing.dcb.popo", "postgres": "eventsourcing.dcb.postgres_tt"}
"""eventsourcing's DCB recorder per store kind: the stores where its side runs."""


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    owner: str


@dataclass(frozen=True, slots=True)
class Claimed:
    key: str
    owner: str
    note: str = NOTE


class AlreadyClaimed(Exception):
    pass


def decide(command: Claim, owner: str | None) -> list[Claimed]:
    if owner is not None:
        raise AlreadyClaimed(command.key)
    return [Claimed(command.key, command.owner)]


def evolve(owner: str | None, event: Claimed) -> str | None:
    return event.owner


claims: Decider[Claim, str | None, Claimed] = Decider(decide=decide, evolve=evolve, initial_state=None)
codec: Codec[Claimed] = Codec([Claimed])


def claim_query(command: Claim) -> Query:
    return Query([QueryItem(types=("Claimed",), tags=(f"claim:{command.key}",))])


def claims_handler(store: EventStore) -> DecisionHandler[Claim, str | None, Claimed]:
    return DecisionHandler(
        store,
        claims,
        codec,
        query=claim_query,
        stream=lambda command: f"claim-{command.key}",
        tags=lambda event: (f"claim:{event.key}",),
    )


async def unsupported(backend: Backend) -> str | None:
    """Why epoch's store of this kind cannot run the workload (its DCB entries raise ``NotSupported``),
    or ``None``: one query read on a fresh, throwaway store."""
    from benchmarks.epoch_side import store_url

    location = backend.fresh("probe")
    try:
        async with open_store(store_url(backend, location)) as store:
            async for _ in store.read_query(claim_query(Claim("probe", "bench"))):
                pass
    except NotSupported as exc:
        return str(exc)
    finally:
        backend.drop(location)
    return None


async def epoch_claims(store: EventStore, tasks: int, count: int) -> float:
    """Seconds for ``count`` claims of fresh keys from ``tasks`` concurrent tasks through one handler."""
    handler = claims_handler(store)

    async def task(t: int) -> None:
        for i in range(t, count, tasks):
            await handler.execute(Claim(f"k{i}", f"owner-{t}"))

    started = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(tasks)))
    return time.perf_counter() - started


def es_env(store: str, location: str) -> dict[str, str]:
    """The environment of eventsourcing's ``DCBApplication`` on ``store`` (``location``: a DSN for postgres)."""
    env = {"PERSISTENCE_MODULE": DCB_RECORDERS[store]}
    if store == "postgres":
        parts = urlsplit(location)
        env.update(
            POSTGRES_DBNAME=parts.path.lstrip("/"),
            POSTGRES_HOST=parts.hostname or "127.0.0.1",
            POSTGRES_PORT=str(parts.port or 5432),
            POSTGRES_USER=parts.username or "postgres",
            POSTGRES_PASSWORD=parts.password or "",
        )
    return env


def es_claims(store: str, location: str, tasks: int, count: int) -> float:
    """The same claims through eventsourcing's DCB recorder, from ``tasks`` threads."""
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
    from eventsourcing.dcb.application import DCBApplication

    app: Any = DCBApplication(env={**es_env(store, location), "POSTGRES_POOL_SIZE": str(tasks)})
    recorder = app.recorder
    refused = 0
    lock = threading.Lock()

    def worker(t: int) -> None:
        nonlocal refused
        for i in range(t, count, tasks):
            key = f"k{i}"
            query = DCBQuery(items=[DCBQueryItem(types=["Claimed"], tags=[f"claim:{key}"])])
            response = recorder.read(query)
            if list(response):
                with lock:
                    refused += 1
                continue
            data = json.dumps({"key": key, "owner": f"owner-{t}", "note": NOTE}).encode()
            event = DCBEvent(type="Claimed", data=data, tags=[f"claim:{key}"])
            recorder.append([event], DCBAppendCondition(fail_if_events_match=query, after=response.head))

    try:
        elapsed = timed_threads(worker, tasks)
    finally:
        app.close()
    assert refused == 0, refused  # fresh keys: nothing was claimed before
    return elapsed
