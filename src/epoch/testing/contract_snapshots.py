"""``SnapshotContract``: what a store with :class:`~epoch.stores.SupportsSnapshots` shows, and what a
:class:`~epoch.CommandHandler` with ``Snapshots`` on it then does (DESIGN §8 "Snapshots").

Subclass it with a ``store`` fixture yielding an open, empty store that declares the capability (as for
:class:`~epoch.testing.EventStoreContract`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from epoch.codec import Codec
from epoch.commands import CommandHandler
from epoch.domain import Decider
from epoch.errors import InvalidEvent, InvalidStreamName, InvalidVersion, StoreUnavailable
from epoch.records import NewEvent
from epoch.snapshots import Snapshots
from epoch.stores import EventStore, SnapshotStatus, SupportsSnapshots, snapshot_store
from epoch.testing._events import collect, new_events

__all__ = ["Add", "Added", "CountingStore", "RacingStore", "SnapshotContract", "Total", "counter"]


@dataclass(frozen=True, slots=True)
class Add:
    """Add ``amount``, ``times`` times (one event each)."""

    amount: int
    times: int = 1


@dataclass(frozen=True, slots=True)
class Added:
    amount: int


@dataclass(frozen=True, slots=True)
class Total:
    total: int = 0
    count: int = 0


counter = Decider(
    decide=lambda command, state: [Added(command.amount)] * command.times,
    evolve=lambda state, event: Total(state.total + event.amount, state.count + 1),
    initial_state=Total(),
)
"""A decider whose state says how many events were folded into it (``count``)."""


class CountingStore(SupportsSnapshots):
    """``store`` that counts the events its ``read_stream`` yields and can fail snapshot writes."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.read = 0
        self.fail_saves = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def read_stream(self, *args: Any, **kwargs: Any) -> Any:
        async for event in self.store.read_stream(*args, **kwargs):
            self.read += 1
            yield event

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        if self.fail_saves:
            raise StoreUnavailable("snapshots are down", stream)
        return bool(await self.store.save_snapshot(stream, version, schema_version, data, keep, first_visible))

    async def load_snapshot(self, stream: str, schema_version: int, at_most: int | None = None) -> Any:
        return await self.store.load_snapshot(stream, schema_version, at_most)

    async def snapshot_status(self, category: str | None = None) -> list[SnapshotStatus]:
        return list(await self.store.snapshot_status(category))

    async def drop_snapshots(self, name: str) -> int:
        return int(await self.store.drop_snapshots(name))


class RacingStore(CountingStore):
    """A :class:`CountingStore` that runs ``before_save`` (another writer's work) just before a save."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.before_save: Callable[[], Awaitable[None]] | None = None

    async def save_snapshot(
        self, stream: str, version: int, schema_version: int, data: bytes, keep: int, first_visible: int | None = None
    ) -> bool:
        if self.before_save is not None:
            await self.before_save()
        return await super().save_snapshot(stream, version, schema_version, data, keep, first_visible)


async def _delete_and_recreate(store: EventStore, stream: str) -> None:
    await store.delete_stream(stream)
    await store.append(stream, [NewEvent("Added", b'{"amount": 5}') for _ in range(2)])  # versions 4, 5


def _capable(store: EventStore) -> SupportsSnapshots:
    capable = snapshot_store(store)
    assert capable is not None, f"{type(store).__name__} does not declare SupportsSnapshots"
    return capable


class SnapshotContract:
    """Snapshots on the ``store`` fixture: the capability itself, then a handler using it."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- the capability -------------------------------------------------------------------------

    async def test_save_then_load(self, store: EventStore) -> None:
        snapshots = _capable(store)
        written = await store.append("s-1", new_events(3))
        before = datetime.now(UTC)
        assert await snapshots.save_snapshot("s-1", 2, 1, b'{"n": 3}', 3) is True
        found = await snapshots.load_snapshot("s-1", 1)
        assert found is not None
        assert (found.stream, found.version, found.position, found.schema_version, found.data) == (
            "s-1",
            2,
            written.positions[2],
            1,
            b'{"n": 3}',
        )
        assert found.taken_at.tzinfo is not None and found.taken_at.utcoffset() is not None
        assert abs((found.taken_at - before).total_seconds()) < 60
        assert await snapshots.load_snapshot("s-2", 1) is None

    async def test_newest_at_or_below_of_the_schema(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(10))
        for version, schema in ((2, 1), (4, 1), (6, 2), (8, 1)):
            assert await snapshots.save_snapshot("s-1", version, schema, b"%d" % version, 10)
        newest = await snapshots.load_snapshot("s-1", 1)
        assert newest is not None and (newest.version, newest.data) == (8, b"8")
        below = await snapshots.load_snapshot("s-1", 1, at_most=7)
        assert below is not None and below.version == 4
        exact = await snapshots.load_snapshot("s-1", 1, at_most=4)
        assert exact is not None and exact.version == 4
        assert await snapshots.load_snapshot("s-1", 1, at_most=1) is None
        other = await snapshots.load_snapshot("s-1", 2)
        assert other is not None and (other.version, other.schema_version) == (6, 2)
        assert await snapshots.load_snapshot("s-1", 3) is None
        huge = await snapshots.load_snapshot("s-1", 1, at_most=2**70)  # beyond 64 bits: no bound
        assert huge is not None and huge.version == 8

    async def test_saving_at_the_same_place_replaces(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(2))
        assert await snapshots.save_snapshot("s-1", 1, 1, b"old", 3)
        assert await snapshots.save_snapshot("s-1", 1, 1, b"new", 3)
        found = await snapshots.load_snapshot("s-1", 1)
        assert found is not None and found.data == b"new"
        assert [(s.stream, s.version, s.count) for s in await snapshots.snapshot_status()] == [("s-1", 1, 1)]

    async def test_keep_prunes_the_oldest(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(6))
        for version in range(6):
            assert await snapshots.save_snapshot("s-1", version, 1, b"x", 2)
        (status,) = await snapshots.snapshot_status()
        assert (status.stream, status.version, status.schema_version, status.count) == ("s-1", 5, 1, 2)
        assert await snapshots.load_snapshot("s-1", 1, at_most=3) is None
        kept = await snapshots.load_snapshot("s-1", 1, at_most=4)
        assert kept is not None and kept.version == 4

    async def test_only_a_visible_event_is_snapshotted(self, store: EventStore) -> None:
        snapshots = _capable(store)
        assert await snapshots.save_snapshot("s-1", 0, 1, b"x", 3) is False  # never written
        await store.append("s-1", new_events(2))
        assert await snapshots.save_snapshot("s-1", 2, 1, b"x", 3) is False  # past the head
        await store.delete_stream("s-1")
        assert await snapshots.save_snapshot("s-1", 1, 1, b"x", 3) is False  # deleted
        assert await snapshots.snapshot_status() == []

    async def test_a_delete_hides_older_snapshots_also_after_recreating(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(3))
        assert await snapshots.save_snapshot("s-1", 2, 1, b"before", 3)
        await store.delete_stream("s-1")
        assert await snapshots.load_snapshot("s-1", 1) is None
        await store.append("s-1", new_events(3))  # versions 3, 4, 5
        assert await snapshots.load_snapshot("s-1", 1) is None
        assert await snapshots.save_snapshot("s-1", 4, 1, b"after", 3)
        found = await snapshots.load_snapshot("s-1", 1)
        assert found is not None and (found.version, found.data) == (4, b"after")
        assert await snapshots.load_snapshot("s-1", 1, at_most=3) is None

    async def test_a_save_names_what_its_state_was_folded_from(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(3))
        assert await snapshots.save_snapshot("s-1", 1, 1, b"x", 3, first_visible=0)
        found = await snapshots.load_snapshot("s-1", 1)
        assert found is not None and (found.version, found.first_visible) == (1, 0)
        await store.delete_stream("s-1")
        await store.append("s-1", new_events(3))  # versions 3, 4, 5: the first visible one is 3
        # A state folded before the delete (from version 0) is not saved, though version 4 is visible:
        assert await snapshots.save_snapshot("s-1", 4, 1, b"old", 3, first_visible=0) is False
        assert await snapshots.load_snapshot("s-1", 1) is None
        assert await snapshots.save_snapshot("s-1", 4, 1, b"new", 3, first_visible=3) is True
        found = await snapshots.load_snapshot("s-1", 1)
        assert found is not None and (found.version, found.first_visible, found.data) == (4, 3, b"new")
        with pytest.raises(InvalidVersion):
            await snapshots.save_snapshot("s-1", 4, 1, b"x", 3, first_visible=-1)

    async def test_status_and_drop(self, store: EventStore) -> None:
        snapshots = _capable(store)
        for stream in ("b-2", "a-1", "b-1", "b"):
            await store.append(stream, new_events(2))
            assert await snapshots.save_snapshot(stream, 0, 1, b"x", 3)
            assert await snapshots.save_snapshot(stream, 1, 2, b"y", 3)
        everything = await snapshots.snapshot_status()
        assert [(s.stream, s.version, s.schema_version, s.count) for s in everything] == [
            ("a-1", 1, 2, 2),
            ("b", 1, 2, 2),
            ("b-1", 1, 2, 2),
            ("b-2", 1, 2, 2),
        ]
        assert [s.stream for s in await snapshots.snapshot_status("b")] == ["b", "b-1", "b-2"]
        assert await snapshots.snapshot_status("c") == []
        assert await snapshots.drop_snapshots("b-1") == 2
        assert await snapshots.drop_snapshots("b-1") == 0
        assert await snapshots.drop_snapshots("b") == 4
        assert [s.stream for s in await snapshots.snapshot_status()] == ["a-1"]
        assert [r.stream for r in await collect(store.read_all())] == ["b-2"] * 2 + ["a-1"] * 2 + ["b-1"] * 2 + [
            "b"
        ] * 2  # dropping snapshots touches no event

    async def test_bad_input_is_refused_and_stores_nothing(self, store: EventStore) -> None:
        snapshots = _capable(store)
        await store.append("s-1", new_events(2))
        for bad in ("", " s-1", "s\n1", 7):
            with pytest.raises(InvalidStreamName):
                await snapshots.save_snapshot(bad, 0, 1, b"x", 3)  # type: ignore[arg-type]
            with pytest.raises(InvalidStreamName):
                await snapshots.load_snapshot(bad, 1)  # type: ignore[arg-type]
            with pytest.raises(InvalidStreamName):
                await snapshots.drop_snapshots(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidStreamName) as bad_category:
            await snapshots.snapshot_status("a-b")
        assert str(bad_category.value) == "invalid stream name 'a-b': a category contains no '-'"
        for version, schema, keep in ((-1, 1, 3), (True, 1, 3), (0, 0, 3), (0, 2**63, 3), (0, 1, 0), (0, 1, 1001)):
            with pytest.raises(InvalidVersion):
                await snapshots.save_snapshot("s-1", version, schema, b"x", keep)
        with pytest.raises(InvalidVersion) as info:
            await snapshots.save_snapshot("s-1", 2**64, 1, b"x", 3)
        assert str(info.value) == f"s-1: invalid version {2**64}"
        with pytest.raises(InvalidVersion):
            await snapshots.load_snapshot("s-1", 1, at_most=-1)
        with pytest.raises(InvalidEvent) as not_bytes:
            await snapshots.save_snapshot("s-1", 0, 1, "x", 3)  # type: ignore[arg-type]
        assert str(not_bytes.value) == "s-1: invalid event at index 0: snapshot data must be bytes, not str"
        assert await snapshots.snapshot_status() == []

    # -- a handler using it ---------------------------------------------------------------------

    async def test_a_cold_load_reads_only_the_events_after_the_newest_snapshot(self, store: EventStore) -> None:
        writer = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=10))
        for _ in range(25):
            await writer.execute("1", Add(1))
        (status,) = await _capable(store).snapshot_status("acc")
        assert (status.stream, status.version, status.count) == ("acc-1", 20, 2)
        counting = CountingStore(store)
        cold = CommandHandler(counting, counter, "acc", Codec([Added]), snapshots=Snapshots(every=10), cache=None)
        assert await cold.load("1") == (Total(25, 25), 24)
        assert counting.read == 6  # where the stream starts (1), the snapshot's own event (20), then 21 to 24
        without = CommandHandler(counting, counter, "acc", Codec([Added]), cache=None)
        counting.read = 0
        assert await without.load("1") == (Total(25, 25), 24)
        assert counting.read == 25

    async def test_state_at_starts_from_the_newest_snapshot_at_or_below(self, store: EventStore) -> None:
        writer = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=5, keep=10))
        await writer.execute("1", Add(2, times=23))  # one append: one snapshot, at 22
        for _ in range(10):
            await writer.execute("1", Add(1))  # 23 .. 32: snapshots at 25 and 30
        counting = CountingStore(store)
        cold = CommandHandler(counting, counter, "acc", Codec([Added]), snapshots=Snapshots(every=5), cache=None)
        plain = CommandHandler(store, counter, "acc", Codec([Added]), cache=None)
        for version in range(33):
            counting.read = 0
            state = await cold.state_at("1", version=version)
            assert state == await plain.state_at("1", version=version)
            assert state.count == version + 1
            newest = max((v for v in (22, 25, 30) if v <= version), default=-1)
            # From a snapshot: where the stream starts, the snapshot's own event, then the ones after it.
            assert counting.read == (version + 1 if newest < 0 else 2 + version - newest)
        with pytest.raises(InvalidVersion):
            await cold.state_at("1", version=33)

    async def test_a_snapshot_never_brings_back_deleted_events(self, store: EventStore) -> None:
        policy = Snapshots(every=3)
        writer = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=policy, cache=None)
        await writer.execute("1", Add(10, times=4))  # a snapshot at 3
        assert await _capable(store).load_snapshot("acc-1", 1) is not None
        await store.delete_stream("acc-1")
        result = await writer.execute("1", Add(1))  # re-created at version 4
        assert (result.version, result.state) == (4, Total(1, 1))
        cold = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=policy, cache=None)
        assert await cold.load("1") == (Total(1, 1), 4)
        assert await cold.state_at("1", version=4) == Total(1, 1)

    async def test_a_delete_between_the_fold_and_the_save_leaves_no_snapshot(self, store: EventStore) -> None:
        racing = RacingStore(store)
        writer = CommandHandler(racing, counter, "acc", Codec([Added]), snapshots=Snapshots(every=3))
        await writer.execute("1", Add(1, times=2))  # versions 0, 1: folded from version 0
        racing.before_save = lambda: _delete_and_recreate(store, "acc-1")
        result = await writer.execute("1", Add(1, times=2))  # 2, 3: crosses 3; others delete, re-create
        assert (result.version, result.state) == (3, Total(4, 4))
        assert await _capable(store).snapshot_status() == []  # the state of deleted events was not saved
        cold = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=3), cache=None)
        assert await cold.load("1") == (Total(10, 2), 5)  # only the re-created stream's events

    async def test_another_schema_version_is_ignored(self, store: EventStore) -> None:
        old = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=5, version=1))
        await old.execute("1", Add(1, times=6))
        counting = CountingStore(store)
        new = CommandHandler(
            counting, counter, "acc", Codec([Added]), snapshots=Snapshots(every=5, version=2), cache=None
        )
        assert await new.load("1") == (Total(6, 6), 5)
        assert counting.read == 6
        await new.execute("1", Add(1, times=5))  # 6 .. 10: a version-2 snapshot at 10
        assert [(s.version, s.schema_version, s.count) for s in await _capable(store).snapshot_status()] == [(10, 2, 2)]

    async def test_a_failing_snapshot_write_never_fails_a_command(
        self, store: EventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        counting = CountingStore(store)
        counting.fail_saves = True
        handler = CommandHandler(counting, counter, "acc", Codec([Added]), snapshots=Snapshots(every=2))
        with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
            result = await handler.execute("1", Add(1, times=3))
        assert (result.version, result.state) == (2, Total(3, 3))
        assert [r.getMessage() for r in caplog.records] == [
            "acc-1: snapshot at version 2 not written (StoreUnavailable: acc-1: snapshots are down)"
        ]
        assert await _capable(store).snapshot_status() == []

    async def test_deleting_every_snapshot_changes_nothing_but_speed(self, store: EventStore) -> None:
        writer = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=4))
        for amount in range(1, 10):
            await writer.execute("1", Add(amount))
        before = await CommandHandler(store, counter, "acc", Codec([Added]), cache=None).load("1")
        assert await _capable(store).drop_snapshots("acc") == 2
        cold = CommandHandler(store, counter, "acc", Codec([Added]), snapshots=Snapshots(every=4), cache=None)
        assert await cold.load("1") == before == (Total(45, 9), 8)
