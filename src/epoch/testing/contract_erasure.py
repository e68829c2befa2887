"""The contract's hard delete (tombstone) and truncation: DESIGN §8 "Stream lifecycle".

A store whose erasure is not immediate (KurrentDB: its server erases at its next scavenge) says so with
``erases_at_once = False``; the checks of ``read_all`` and ``get_event`` then run after ``scavenge()``
(and ``head_position`` may have moved on: KurrentDB writes a tombstone as an event). A store whose
``StreamDeleted`` cannot name the version a tombstoned stream had says so with
``tombstones_keep_version = False``.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from epoch.errors import InvalidVersion, StreamDeleted, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS
from epoch.stores import EventStore
from epoch.testing._events import collect, new_events

__all__ = ["ErasureContract", "settle_erasure"]


def _tombstone_version(store: EventStore, version: int) -> int | None:
    """The version ``StreamDeleted`` names for a stream tombstoned at ``version`` (KurrentDB: none)."""
    return version if getattr(store, "tombstones_keep_version", True) else None


async def settle_erasure(store: EventStore) -> None:
    """Let the erasure of hard deletes and truncations happen (a scavenge where it is not at once)."""
    if not getattr(store, "erases_at_once", True):
        await store.scavenge()


class ErasureContract:
    """Mixed into :class:`~epoch.testing.contract.EventStoreContract`; uses its ``store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- hard delete ----------------------------------------------------------------------------

    async def test_hard_delete_tombstones_the_stream(self, store: EventStore) -> None:
        other = await store.append("t-2", new_events(1))
        doomed = await store.append("t-1", new_events(3))
        head = await store.head_position()
        assert head == doomed.position
        await store.delete_stream("t-1", 2, hard=True)
        await settle_erasure(store)
        assert await store.stream_version("t-1") is None
        assert await collect(store.read_stream("t-1")) == []
        assert await collect(store.read_stream("t-1", backwards=True)) == []
        assert await collect(store.read_stream("t-1", from_version=0)) == []
        assert [(r.stream, r.position) for r in await collect(store.read_all())] == [("t-2", other.position)]
        assert [r.stream for r in await collect(store.read_all(categories="t"))] == ["t-2"]
        if getattr(store, "erases_at_once", True):
            assert await store.head_position() == head  # never goes back
        else:
            assert await store.head_position() >= head
        last = _tombstone_version(store, 2)
        for expected in (ANY, NO_STREAM, 2, STREAM_EXISTS):
            with pytest.raises(StreamDeleted) as info:
                await store.append("t-1", new_events(1), expected)
            assert (
                str(info.value) == f"t-1: the stream is deleted (last version {'no stream' if last is None else last})"
            )
            assert (info.value.stream, info.value.version) == ("t-1", last)
        with pytest.raises(StreamDeleted):
            await store.append("t-1", [], ANY)
        assert await collect(store.read_stream("t-1")) == []
        assert [r.stream for r in await collect(store.read_all())] == ["t-2"]

    async def test_hard_delete_erases_data_and_ids(self, store: EventStore) -> None:
        doomed = await store.append("t-1", new_events(2, tag="secret"))
        ids = [r.id for r in await collect(store.read_stream("t-1"))]
        await store.delete_stream("t-1", hard=True)
        await settle_erasure(store)
        for id in ids:
            assert await store.get_event(id) is None
            assert await store.get_event(id, stream="t-1") is None
        later = await store.append("t-2", new_events(1))
        assert later.position > doomed.position  # positions of erased events are never reused

    async def test_second_delete_is_a_no_op(self, store: EventStore) -> None:
        await store.append("t-1", new_events(2))
        await store.delete_stream("t-1", hard=True)
        await store.delete_stream("t-1", hard=True)
        await store.delete_stream("t-1", 7, hard=True)  # no guard left to check: a no-op all the same
        await store.delete_stream("t-1")
        assert await store.stream_version("t-1") is None
        with pytest.raises(StreamDeleted):
            await store.append("t-1", new_events(1))

    async def test_hard_delete_checks_expected_version(self, store: EventStore) -> None:
        await store.append("t-1", new_events(2))
        with pytest.raises(WrongExpectedVersion) as info:
            await store.delete_stream("t-1", 0, hard=True)
        assert str(info.value) == "t-1: expected version 0, actual 1"
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream("t-1", NO_STREAM, hard=True)
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [0, 1]
        assert (await store.append("t-1", new_events(1), 1)).version == 2

    async def test_hard_delete_of_an_unwritten_stream(self, store: EventStore) -> None:
        head = await store.head_position()
        await store.delete_stream("t-1", NO_STREAM, hard=True)
        with pytest.raises(StreamDeleted) as info:
            await store.append("t-1", new_events(1), NO_STREAM)
        assert str(info.value) == "t-1: the stream is deleted (last version no stream)"
        assert await store.stream_version("t-1") is None
        assert await collect(store.read_all()) == []
        if getattr(store, "erases_at_once", True):
            assert await store.head_position() == head == 0

    async def test_hard_delete_of_a_soft_deleted_stream(self, store: EventStore) -> None:
        await store.append("t-1", new_events(2))
        await store.delete_stream("t-1")
        await store.delete_stream("t-1", NO_STREAM, hard=True)
        await settle_erasure(store)
        assert await collect(store.read_all()) == []
        with pytest.raises(StreamDeleted):
            await store.append("t-1", new_events(1), NO_STREAM)

    async def test_tombstone_refuses_lifecycle_changes(self, store: EventStore) -> None:
        await store.append("t-1", new_events(1))
        await store.delete_stream("t-1", hard=True)
        with pytest.raises(StreamDeleted):
            await store.truncate_before("t-1", 1)
        with pytest.raises(StreamDeleted):
            await store.set_stream_limits("t-1", max_count=1)

    async def test_hard_must_be_a_bool(self, store: EventStore) -> None:
        await store.append("t-1", new_events(1))
        for bad in ("yes", 1, None):
            with pytest.raises(InvalidVersion) as info:
                await store.delete_stream("t-1", hard=bad)  # type: ignore[arg-type]
            assert str(info.value) == f"t-1: invalid version {f'hard={bad!r}'!r}"
        assert await store.stream_version("t-1") == 0

    # -- truncate_before ------------------------------------------------------------------------

    async def test_truncate_before(self, store: EventStore) -> None:
        first = await store.append("t-1", new_events(5))
        other = await store.append("t-2", new_events(1))
        ids = [r.id for r in await collect(store.read_stream("t-1"))]
        await store.truncate_before("t-1", 2)
        await settle_erasure(store)
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [2, 3, 4]
        assert [r.version for r in await collect(store.read_stream("t-1", from_version=0))] == [2, 3, 4]
        assert [r.version for r in await collect(store.read_stream("t-1", backwards=True))] == [4, 3, 2]
        assert [r.position for r in await collect(store.read_all())] == [*first.positions[2:], other.position]
        assert await store.stream_version("t-1") == 4
        assert await store.get_event(ids[0]) is None
        assert await store.get_event(ids[2]) is not None
        assert (await store.append("t-1", new_events(1), 4)).version == 5
        await store.truncate_before("t-1", 1)  # below the start already: nothing changes
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [2, 3, 4, 5]

    async def test_truncate_past_the_end_erases_everything(self, store: EventStore) -> None:
        await store.append("t-1", new_events(3))
        await store.truncate_before("t-1", 2**70)  # guarantee 13: any int >= 0
        await settle_erasure(store)
        assert await store.stream_version("t-1") is None
        assert await collect(store.read_stream("t-1")) == []
        assert await collect(store.read_all()) == []
        again = await store.append("t-1", new_events(1), NO_STREAM)
        assert again.version == 3  # versions are never reused
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [3]

    async def test_truncate_an_unwritten_stream(self, store: EventStore) -> None:
        await store.truncate_before("t-1", 3)
        assert await store.stream_version("t-1") is None
        assert (await store.append("t-1", new_events(1), NO_STREAM)).version == 0

    async def test_truncate_refuses_bad_versions(self, store: EventStore) -> None:
        await store.append("t-1", new_events(2))
        for bad in (-1, True, "1", 1.5, None):
            with pytest.raises(InvalidVersion) as info:
                await store.truncate_before("t-1", bad)  # type: ignore[arg-type]
            assert str(info.value) == f"t-1: invalid version {bad!r}"
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [0, 1]
        assert len(await collect(store.read_all())) == 2

    async def test_truncate_erases_soft_deleted_events(self, store: EventStore) -> None:
        await store.append("t-1", new_events(2))
        await store.delete_stream("t-1")
        kept = await store.append("t-1", new_events(2), NO_STREAM)
        await store.truncate_before("t-1", 3)
        await settle_erasure(store)
        assert [r.version for r in await collect(store.read_stream("t-1"))] == [3]
        assert [r.position for r in await collect(store.read_all())] == [kept.position]
