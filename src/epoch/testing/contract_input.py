"""Guarantee 8 of DESIGN §3: bad input gets a clear ``EpochError`` and never changes what is stored.

A mixin of :class:`epoch.testing.EventStoreContract` (same ``store`` fixture, same rules).
"""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import pytest

from epoch.errors import InvalidEvent, InvalidStreamName, WrongExpectedVersion
from epoch.records import NewEvent
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events, nothing_stored

__all__ = ["InputContract"]


class InputContract:
    """Bad stream names, event types, events and sizes are refused, naming what is wrong; errors pickle."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- guarantee 8: bad input -----------------------------------------------------------------

    @pytest.mark.parametrize(
        "name", ["", "x" * 513, " lead", "trail ", "tab\there", "nul\x00", "del\x7f", "c1\x85", "lone\ud800", 42, None]
    )
    async def test_invalid_stream_name(self, store: EventStore, name: Any) -> None:
        with pytest.raises(InvalidStreamName) as info:
            await store.append(name, new_events(1))
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidStreamName):
            await collect(store.read_stream(name))
        with pytest.raises(InvalidStreamName):
            await store.stream_version(name)
        assert await store.head_position() == 0

    @pytest.mark.parametrize("type_name", ["", "x" * 257, " lead", "ctl\n", "lone\udfff"])
    async def test_invalid_event_type(self, store: EventStore, type_name: str) -> None:
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [*new_events(1), NewEvent(type_name, b"{}")])
        assert info.value.stream == "s-1" and info.value.index == 1
        assert await nothing_stored(store, "s-1")

    @pytest.mark.parametrize(
        "event",
        [
            NewEvent("T", "a str", b""),  # type: ignore[arg-type]
            NewEvent("T", bytearray(b"{}")),
            NewEvent("T", b"{}", "{}"),  # type: ignore[arg-type]
            NewEvent("T", b"{}", b"[1, 2]"),
            NewEvent("T", b"{}", b"{not json"),
            NewEvent("T", b"{}", b"\xff\xfe"),
            NewEvent("T", b"{}", id="not-a-uuid"),  # type: ignore[arg-type]
            "not an event",
        ],
    )
    async def test_invalid_event(self, store: EventStore, event: Any) -> None:
        await store.append("s-1", new_events(1))
        with pytest.raises(InvalidEvent):
            await store.append("s-1", [*new_events(1), event])
        assert await store.stream_version("s-1") == 0
        assert await store.head_position() == (await collect(store.read_all()))[-1].position

    async def test_events_must_be_a_list(self, store: EventStore) -> None:
        with pytest.raises(InvalidEvent):
            await store.append("s-1", new_events(1)[0])  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent):
            await store.append("s-1", b"bytes")  # type: ignore[arg-type]
        assert await nothing_stored(store, "s-1")

    async def test_event_too_large(self, store: EventStore) -> None:
        limit: int = getattr(store, "max_event_size", 1024 * 1024)
        with pytest.raises(InvalidEvent) as info:
            await store.append("s-1", [NewEvent("Big", b"x" * (limit - 7), b'{"a": 1}')])
        assert str(info.value) == (
            f"s-1: invalid event at index 0: {limit + 1} bytes of data and metadata exceed the limit of {limit}"
        )
        assert await nothing_stored(store, "s-1")
        fits = await store.append("s-1", [NewEvent("Big", b"x" * (limit - 8), b'{"a": 1}')])
        assert fits.version == 0
        recorded = await collect(store.read_stream("s-1"))
        assert len(recorded[0].data) == limit - 8

    async def test_errors_pickle(self, store: EventStore) -> None:
        await store.append("s-1", new_events(1))
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", new_events(1), 5)
        copy = pickle.loads(pickle.dumps(info.value))
        assert isinstance(copy, WrongExpectedVersion)
        assert (copy.stream, copy.expected, copy.actual) == ("s-1", 5, 0)
        assert str(copy) == str(info.value)
