"""Small helpers the contract suite's modules share: fresh events, collecting a read, an empty store."""

from __future__ import annotations

from typing import Any

from epoch.records import NewEvent, RecordedEvent
from epoch.stores import EventStore

__all__ = ["collect", "new", "nothing_stored"]


def new(n: int = 1, type: str = "Happened", prefix: bytes = b"") -> list[NewEvent]:
    """``n`` fresh events with JSON data and metadata."""
    return [NewEvent(type, prefix + b'{"n": %d}' % i, b'{"who": "test"}') for i in range(n)]


async def collect(iterator: Any) -> list[RecordedEvent]:
    return [event async for event in iterator]


async def nothing_stored(store: EventStore, stream: str | None = None) -> bool:
    """True when the store is still empty (and ``stream`` unwritten)."""
    if stream is not None and await store.stream_version(stream) is not None:
        return False
    return await store.head_position() == 0
