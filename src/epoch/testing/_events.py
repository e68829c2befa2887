"""Helpers for tests of stores and of code on top of them: fresh events, collecting a read, an empty store.

``new_events`` and ``collect`` are exported by :mod:`epoch.testing`; the contract suite uses them too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable

from epoch.records import NewEvent, RecordedEvent
from epoch.stores import EventStore

__all__ = ["collect", "new_events", "nothing_stored"]


def new_events(n: int = 1, tag: str = "", type: str = "Happened") -> list[NewEvent]:
    """``n`` fresh events (new ids) with metadata ``{"who": "test"}`` and JSON data ``{"n": 0}``, ``{"n": 1}``,
    ...; with a ``tag``, ``{"tag": tag, "n": 0}``, so that batches written with different tags differ."""
    tagged = {"tag": tag} if tag else {}
    return [NewEvent(type, json.dumps({**tagged, "n": i}).encode(), b'{"who": "test"}') for i in range(n)]


async def collect(read: AsyncIterable[RecordedEvent]) -> list[RecordedEvent]:
    """Every event a read (``read_stream``, ``read_all``) yields, in order."""
    return [event async for event in read]


async def nothing_stored(store: EventStore, stream: str | None = None) -> bool:
    """True when the store is still empty (and ``stream`` unwritten)."""
    if stream is not None and await store.stream_version(stream) is not None:
        return False
    return await store.head_position() == 0
