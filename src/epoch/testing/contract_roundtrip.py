"""Guarantee 6 of DESIGN §3: stored bytes, names and ``recorded_at`` come back exactly as written.

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from epoch.records import NewEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events

__all__ = ["RoundTripContract"]


class RoundTripContract:
    """Bytes, metadata, stream and type names round-trip exactly; ``recorded_at`` is UTC and now."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- guarantee 6: round trips ---------------------------------------------------------------

    async def test_bytes_round_trip_exactly(self, store: EventStore) -> None:
        payloads = [b"", b"\x00\x01\xff\xfe", bytes(range(256)), "héllo ✓ 𝄞".encode(), b"not json {"]
        metadata = '{"who": "Zoë", "n": 1, "nested": {"ok": [1, 2.5, null]}, "$correlation_id": "c"}'.encode()
        events = [NewEvent("Bytes", payload, metadata) for payload in payloads]
        await store.append("bytes-1", events)
        recorded = await collect(store.read_stream("bytes-1"))
        assert [r.data for r in recorded] == payloads
        assert all(type(r.data) is bytes and type(r.metadata) is bytes for r in recorded)
        assert all(r.metadata == metadata for r in recorded)
        assert [r.data for r in await collect(store.read_all())] == payloads

    async def test_recorded_at_is_utc_now(self, store: EventStore) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        result = await store.append("s-1", new_events(2))
        after = datetime.now(UTC) + timedelta(seconds=5)
        recorded = await collect(store.read_stream("s-1"))
        for r in recorded:
            assert r.recorded_at.utcoffset() == timedelta(0)
            assert before <= r.recorded_at <= after
        assert recorded[-1].recorded_at == result.recorded_at

    @pytest.mark.parametrize(
        "name",
        ["users-42", "a", "x" * 512, "naïve-Ünïcode-流-🙂", "it's; DROP TABLE events;--", "with space-1", 'q"uote'],
    )
    async def test_stream_names_round_trip(self, store: EventStore, name: str) -> None:
        await store.append(name, new_events(1))
        recorded = await collect(store.read_stream(name))
        assert [r.stream for r in recorded] == [name]
        assert [r.stream for r in await collect(store.read_all())] == [name]
        assert await store.stream_version(name) == 0

    async def test_event_type_names_round_trip(self, store: EventStore) -> None:
        names = ["T", "x" * 256, "Ünïcode ✓", "it's; --"]
        await store.append("s-1", [NewEvent(name, b"{}") for name in names])
        assert [r.type for r in await collect(store.read_stream("s-1"))] == names
