"""Guarantee 5 (event ids): the same ids at the same place are a no-op, and an event is found by its id.

The second half is a capability each store declares. "The same id anywhere else raises
``DuplicateEventId``" needs an index of every stored id. A store that has one declares ``detects_duplicate_ids_across_streams = True`` (memory, SQLite, PostgreSQL);
one that cannot afford it declares ``False`` and documents what it does instead (KurrentDB: the server
keeps no global id index, so an id already stored in *another* stream is stored again). Inside one
stream every store must still refuse an id stored at another version. The suite reads the flag and
asserts the declared behaviour exactly, either way; a store that declares nothing fails
:meth:`test_duplicate_id_capability_is_declared`.
"""

from __future__ import annotations

from uuid import uuid4

import pytest
from msgspec.structs import replace

from epoch.errors import DuplicateEventId
from epoch.records import ANY, NO_STREAM
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events, nothing_stored

__all__ = ["DuplicateIdContract", "detects_duplicate_ids_across_streams"]


def detects_duplicate_ids_across_streams(store: object) -> bool:
    """What ``store`` declares; raises ``AttributeError`` when it declares nothing."""
    declared = getattr(store, "detects_duplicate_ids_across_streams")  # noqa: B009 - no default, on purpose
    if type(declared) is not bool:
        raise TypeError(f"{type(store).__name__}.detects_duplicate_ids_across_streams must be a bool")
    return declared


class DuplicateIdContract:
    """Event ids: the same ids at the same place are a no-op, an event is found by its id, and an id stored
    twice is refused in the same stream everywhere, across streams where declared."""

    # -- guarantee 5: idempotent writes ---------------------------------------------------------

    async def test_same_ids_same_place_is_a_no_op(self, store: EventStore) -> None:
        events = new_events(3)
        first = await store.append("s-1", events, NO_STREAM)
        assert not first.replayed
        again = await store.append("s-1", events, NO_STREAM)
        assert again == replace(first, replayed=True)  # answered with where the first one put them
        also = await store.append("s-1", events, ANY)
        assert also == replace(first, replayed=True)
        assert await store.stream_version("s-1") == 2
        assert await store.head_position() == first.position

    async def test_idempotent_retry_after_later_writes(self, store: EventStore) -> None:
        batch = new_events(2)
        await store.append("s-1", new_events(1))
        first = await store.append("s-1", batch, 0)
        await store.append("s-1", new_events(1), 2)
        again = await store.append("s-1", batch, 0)
        assert again == replace(first, replayed=True)
        assert await store.stream_version("s-1") == 3

    async def test_duplicate_ids_inside_one_batch(self, store: EventStore) -> None:
        event = new_events(1)[0]
        with pytest.raises(DuplicateEventId):
            await store.append("s-1", [event, event])
        assert await nothing_stored(store, "s-1")

    async def test_get_event(self, store: EventStore) -> None:
        events = new_events(2)
        await store.append("s-1", events)
        found = await store.get_event(events[1].id)
        assert found is not None and (found.stream, found.version, found.data) == ("s-1", 1, events[1].data)
        assert await store.get_event(uuid4()) is None
        hinted = await store.get_event(events[1].id, stream="s-1")
        assert hinted is not None
        assert hinted.id == events[1].id
        assert await store.get_event(events[1].id, stream="s-2") is None  # stored elsewhere

    # -- the same id elsewhere -------------------------------------------------------------------

    async def test_duplicate_id_capability_is_declared(self, store: EventStore) -> None:
        assert detects_duplicate_ids_across_streams(store) in (True, False)

    async def test_same_id_elsewhere_is_a_duplicate(self, store: EventStore) -> None:
        events = new_events(2)
        first = await store.append("s-1", events)
        head = await store.head_position()

        # The same stream, another version: every store refuses it, and writes nothing.
        with pytest.raises(DuplicateEventId) as info:
            await store.append("s-1", [*new_events(1), events[0]])
        assert (info.value.stream, info.value.id) == ("s-1", events[0].id)
        assert (info.value.existing_stream, info.value.existing_version) == ("s-1", 0)
        assert str(info.value) == f"s-1: event id {events[0].id} is already stored at s-1 version 0"
        with pytest.raises(DuplicateEventId) as info:
            await store.append("s-1", [events[1], events[0]])
        assert (info.value.id, info.value.existing_stream, info.value.existing_version) == (events[1].id, "s-1", 1)
        assert await store.head_position() == head
        assert await store.stream_version("s-1") == 1

        # Another stream: refused where the store keeps an index of ids...
        if detects_duplicate_ids_across_streams(store):
            with pytest.raises(DuplicateEventId) as info:
                await store.append("s-2", [events[1]])
            assert (info.value.stream, info.value.id) == ("s-2", events[1].id)
            assert (info.value.existing_stream, info.value.existing_version) == ("s-1", 1)
            assert str(info.value) == f"s-2: event id {events[1].id} is already stored at s-1 version 1"
            assert await store.head_position() == head
            assert await store.stream_version("s-2") is None
            assert [(r.stream, r.version) for r in await collect(store.read_all())] == [("s-1", 0), ("s-1", 1)]
            return

        # ...else (as documented, e.g. KurrentDB) the id is stored a second time, in the other stream,
        # and the first copy is left as it was.
        second = await store.append("s-2", [events[1]])
        assert (second.stream, second.version, second.positions) == ("s-2", 0, (second.position,))
        assert second.position > head
        assert await store.head_position() == second.position
        everything = await collect(store.read_all())
        assert [(r.stream, r.version, r.id) for r in everything] == [
            ("s-1", 0, events[0].id),
            ("s-1", 1, events[1].id),
            ("s-2", 0, events[1].id),
        ]
        assert [r.position for r in everything] == [*first.positions, second.position]
        assert everything[1].data == everything[2].data == events[1].data
        hinted = await store.get_event(events[1].id, stream="s-1")
        assert hinted is not None and (hinted.stream, hinted.version) == ("s-1", 1)
