"""``epoch copy`` into a store that can only append (memory here; KurrentDB takes the same path): a stream's
deleted versions are appended, then soft-deleted, in two steps; a run that stops between them (a lost
connection, a kill) leaves them visible, and the next run deletes them before it copies anything."""

from __future__ import annotations

from typing import Any

import pytest

from epoch import NewEvent, StoreUnavailable
from epoch.stores.copy import copy_store
from epoch.stores.memory import MemoryEventStore


class LosesADelete(MemoryEventStore):
    """Its first soft delete fails, as if the connection were lost just before it."""

    lost = False

    async def delete_stream(self, *args: Any, **kwargs: Any) -> None:
        if not self.lost:
            self.lost = True
            raise StoreUnavailable("connection lost")
        await super().delete_stream(*args, **kwargs)


class ListsNoStates(MemoryEventStore):
    """A source that lists no lifecycle states (as KurrentDB): only its soft deletes, as read, are carried."""

    lifecycle_states = None  # type: ignore[assignment]


def events(n: int, tag: str) -> list[NewEvent]:
    return [NewEvent("Happened", b'{"%s": %d}' % (tag.encode(), i)) for i in range(n)]


@pytest.mark.parametrize("source", [MemoryEventStore, ListsNoStates])
async def test_a_delete_lost_between_append_and_delete_is_made_on_resume(source: type[MemoryEventStore]) -> None:
    src, dst = source(), LosesADelete()
    await src.append("s-1", events(3, "old"))
    await src.delete_stream("s-1")  # versions 0-2 deleted
    await src.append("s-1", events(2, "new"))  # versions 3 and 4 visible
    await src.append("t-1", events(1, "t"))
    with pytest.raises(StoreUnavailable):
        await copy_store(src, dst)
    assert [e.version async for e in dst.read_stream("s-1")] == [0, 1, 2]  # appended, not deleted
    rest = await copy_store(src, dst)
    assert (rest.copied, rest.resumed) == (3, True)
    assert [e.version async for e in dst.read_stream("s-1")] == [3, 4]
    assert [(e.stream, e.version) async for e in dst.read_all()] == [
        (e.stream, e.version) async for e in src.read_all()
    ]


@pytest.mark.parametrize("source", [MemoryEventStore, ListsNoStates])
async def test_a_lost_delete_of_a_whole_stream_is_made_on_resume(source: type[MemoryEventStore]) -> None:
    src, dst = source(), LosesADelete()
    await src.append("s-1", events(3, "old"))
    await src.delete_stream("s-1")
    with pytest.raises(StoreUnavailable):
        await copy_store(src, dst)
    rest = await copy_store(src, dst)
    assert (rest.copied, rest.resumed) == (0, True)
    assert [e.version async for e in dst.read_stream("s-1")] == []
    assert await dst.stream_version("s-1") is None
    assert [e.version async for e in dst.read_all()] == [0, 1, 2]
