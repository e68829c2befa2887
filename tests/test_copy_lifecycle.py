"""``epoch copy`` and the stream lifecycle (DESIGN §8): tombstones, truncations, soft deletes and limits of
the source reach the destination, also those made after the copy started (carried when it resumes)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from epoch import EventStore, NewEvent, StreamDeleted, WrongExpectedVersion, open_store
from epoch.stores.copy import copy_store
from epoch.stores.kurrentdb import KurrentDBEventStore
from tests.kurrentdb_fake import FakeKurrentDB
from tests.test_copy import snapshot

pytestmark = [pytest.mark.postgres]


def events(n: int, tag: str) -> list[NewEvent]:
    return [NewEvent("Happened", b'{"%s": %d}' % (tag.encode(), i)) for i in range(n)]


async def fill(store: EventStore) -> None:
    for name in ("a-1", "b-1", "c-1", "d-1", "e-1", "x-1"):
        await store.append(name, events(5, name))
    await store.append("f-1", events(2, "f-1"))  # the newest events: the copy's resume point
    await store.truncate_before("a-1", 2)
    await store.delete_stream("x-1", hard=True)
    await store.set_stream_limits("e-1", max_count=2)


async def lifecycle(store: Any) -> list[tuple[object, ...]]:
    """The stores' lifecycle states; of a tombstone only that it is one (a stream tombstoned before the
    copy reached it has no version in the destination: none of its events were copied)."""
    states = [state async for state in store.lifecycle_states()]
    return [
        (s.stream, "tombstoned")
        if s.tombstoned
        else (s.stream, s.version, s.first_visible, s.first_stored, s.max_count, s.max_age)
        for s in states
    ]


async def same(src: EventStore, dst: EventStore) -> None:
    assert await snapshot(dst, with_time=False) == await snapshot(src, with_time=False)
    assert await lifecycle(dst) == await lifecycle(src)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def src_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("other_pg_dsn"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'src.db'}"


async def test_a_copy_keeps_the_lifecycle(src_url: str, sql_store_url: str) -> None:
    async with open_store(src_url) as src, open_store(sql_store_url) as dst:
        await fill(src)
        result = await copy_store(src, dst, chunk_size=4)
        assert (result.copied, result.carried) == (32 - 2 - 5, 3)  # a-1's first two are erased, x-1's all
        await same(src, dst)
        assert [e.version async for e in dst.read_stream("a-1")] == [2, 3, 4]
        assert [e.version async for e in dst.read_stream("e-1")] == [3, 4]
        with pytest.raises(StreamDeleted):
            await dst.append("x-1", events(1, "again"))
        assert (await dst.append("a-1", events(1, "next"), 4)).version == 5


async def test_changes_after_the_copy_started_are_carried_when_it_resumes(src_url: str, sql_store_url: str) -> None:
    async with open_store(src_url) as src, open_store(sql_store_url) as dst:
        await fill(src)

        def interrupt(copied: int) -> None:
            if copied >= 12:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await copy_store(src, dst, chunk_size=4, progress=interrupt)
        assert len([e async for e in dst.read_all()]) == 12  # a-1, b-1, c-1 and part of d-1
        await src.delete_stream("b-1", hard=True)
        await src.truncate_before("c-1", 3)
        await src.delete_stream("d-1")
        await src.set_stream_limits("f-1", max_age=timedelta(days=1))
        await src.truncate_before("f-1", 1)
        rest = await copy_store(src, dst, chunk_size=4)
        assert rest.resumed
        await same(src, dst)
        with pytest.raises(StreamDeleted):
            await dst.append("b-1", events(1, "again"))
        assert [e.version async for e in dst.read_stream("c-1")] == [3, 4]
        assert await dst.stream_version("d-1") is None
        again = await copy_store(src, dst)  # complete: nothing more to copy, the states hold already
        assert (again.copied, again.resumed) == (0, True)
        await same(src, dst)


async def test_resuming_when_the_destinations_newest_event_was_erased_at_the_source(
    src_url: str, sql_store_url: str
) -> None:
    async with open_store(src_url) as src, open_store(sql_store_url) as dst:
        await fill(src)
        await copy_store(src, dst)
        await src.append("g-1", events(2, "g-1"))
        await src.delete_stream("f-1", hard=True)  # the destination's newest events, erased at the source
        rest = await copy_store(src, dst)
        assert (rest.copied, rest.resumed) == (2, True)
        await same(src, dst)


async def test_limits_the_source_lifted_are_lifted_in_the_destination(src_url: str, sql_store_url: str) -> None:
    """A stream whose limits are cleared leaves the source's lifecycle states: the next run still clears
    them in the destination (which would otherwise hide events the source shows)."""
    async with open_store(src_url) as src, open_store(sql_store_url) as dst:
        await fill(src)
        await src.set_stream_limits("b-1", max_age=timedelta(days=1))
        first = await copy_store(src, dst)
        assert first.carried == 4
        assert [e.version async for e in dst.read_stream("e-1")] == [3, 4]
        await src.set_stream_limits("e-1", max_count=None, max_age=None)
        await src.set_stream_limits("b-1", max_count=None, max_age=None)
        await src.append("f-1", events(1, "late"))
        again = await copy_store(src, dst)
        assert (again.copied, again.carried) == (1, 4)  # a-1 and x-1 as before; e-1 and b-1 lifted
        await same(src, dst)
        assert [e.version async for e in dst.read_stream("e-1")] == [0, 1, 2, 3, 4]
        assert await lifecycle(dst) == [("a-1", 4, 2, 2, None, None), ("x-1", "tombstoned")]


async def test_lifted_limits_reach_a_destination_that_only_appends() -> None:
    async with open_store("memory://") as src, open_store("memory://") as dst:
        await src.append("e-1", events(5, "e-1"))
        await src.set_stream_limits("e-1", max_count=2)
        await copy_store(src, dst)
        assert [e.version async for e in dst.read_stream("e-1")] == [3, 4]
        await src.set_stream_limits("e-1", max_count=None)
        again = await copy_store(src, dst)
        assert (again.copied, again.carried) == (0, 1)
        assert [e.version async for e in dst.read_stream("e-1")] == [0, 1, 2, 3, 4]
        assert await lifecycle(dst) == []


class TruncatesWhenTheCopyStarts:
    """The source, truncating streams once the copy has read its lifecycle states and starts on its events
    (as another process may at any time): the states the copy read no longer say where they start."""

    def __init__(self, store: EventStore, cuts: dict[str, int]) -> None:
        self._store, self._cuts = store, cuts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read_all(self, *args: Any, **kwargs: Any) -> Any:
        for stream, version in self._cuts.items():
            await self._store.truncate_before(stream, version)
        self._cuts = {}
        async for event in self._store.read_all(*args, **kwargs):
            yield event


async def test_a_truncation_while_the_copy_runs_is_no_conflict(src_url: str, sql_store_url: str) -> None:
    async with open_store(src_url) as store, open_store(sql_store_url) as dst:
        await fill(store)  # a-1 starts at 2 already; b-1 has no state yet
        src: Any = TruncatesWhenTheCopyStarts(store, {"a-1": 4, "b-1": 3})
        result = await copy_store(src, dst, chunk_size=4)
        assert (result.copied, result.carried) == (32 - 4 - 3 - 5, 4)
        await same(store, dst)
        assert [e.version async for e in dst.read_stream("a-1")] == [4]
        assert [e.version async for e in dst.read_stream("b-1")] == [3, 4]


async def test_a_conflict_no_new_state_explains_is_raised_as_it_is(sql_store_url: str) -> None:
    async with open_store("memory://") as src, open_store(sql_store_url) as dst:
        await src.append("a-1", events(2, "a-1"))
        await src.append("b-1", events(1, "b-1"))
        await copy_store(src, dst)
        await dst.append("a-1", events(1, "not from the source"))
        await src.append("a-1", events(1, "late"))
        with pytest.raises(WrongExpectedVersion) as info:
            await copy_store(src, dst)
        assert str(info.value) == "a-1: expected version 1, actual 2"
        assert [e.version async for e in dst.read_stream("a-1")] == [0, 1, 2]


async def test_limits_the_source_lifted_are_lifted_in_a_kurrentdb_destination(src_url: str) -> None:
    """KurrentDB lists no lifecycle states: the copy finds there the streams whose metadata sets limits
    (``$maxCount``, ``$maxAge``) and clears those the source lists no state of any more; limits the source
    still has, and epoch's own ``$`` streams (a snapshot stream's ``$maxCount``), are left as they are."""
    with FakeKurrentDB() as fake:
        async with open_store(src_url) as src, open_store(fake.uri) as dst:
            for name in ("e-1", "b-1"):
                await src.append(name, events(5, name))
            await src.append("f-1", events(2, "f-1"))
            await src.set_stream_limits("e-1", max_count=2)
            await src.set_stream_limits("b-1", max_age=timedelta(days=1))
            first = await copy_store(src, dst)
            assert (first.copied, first.carried) == (12, 2)
            assert [e.version async for e in dst.read_stream("e-1")] == [3, 4]
            assert (fake.metadata("e-1"), fake.metadata("b-1")) == ({"$maxCount": 2}, {"$maxAge": 86400})
            assert isinstance(dst, KurrentDBEventStore)
            assert await dst.save_snapshot("e-1", 4, 1, b"state", 3)
            assert fake.metadata("$epoch-snapshots-e-1") == {"$maxCount": 3}
            await src.set_stream_limits("e-1", max_count=None, max_age=None)
            await src.append("f-1", events(1, "late"))
            again = await copy_store(src, dst)
            assert (again.copied, again.carried) == (1, 2)  # b-1 as before; e-1 lifted
            assert [e.version async for e in dst.read_stream("e-1")] == [0, 1, 2, 3, 4]
            assert [e.version async for e in dst.read_stream("b-1")] == [0, 1, 2, 3, 4]
            assert (fake.metadata("e-1"), fake.metadata("b-1")) == ({}, {"$maxAge": 86400})
            assert fake.metadata("$epoch-snapshots-e-1") == {"$maxCount": 3}
            await src.set_stream_limits("b-1", max_count=None, max_age=None)
            third = await copy_store(src, dst)
            assert (third.copied, third.carried) == (0, 1)  # b-1 lifted; e-1 has nothing left to lift
            assert (fake.metadata("e-1"), fake.metadata("b-1")) == ({}, {})
            assert (await copy_store(src, dst)).carried == 0
            assert await snapshot(dst, with_time=False) == await snapshot(src, with_time=False)
