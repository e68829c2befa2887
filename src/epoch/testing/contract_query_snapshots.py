"""``QuerySnapshotContract``: what a store with :class:`~epoch.stores.SupportsQuerySnapshots` shows, and
what a :class:`~epoch.DecisionHandler` with ``Snapshots`` on it then does (docs/snapshots.md, "Snapshots
of decisions").

Subclass it with a ``store`` fixture yielding an open, empty store that declares the capability and serves
``read_query`` and ``append_with_condition`` (as for :class:`~epoch.testing.EventStoreContract`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from epoch.codec import Codec
from epoch.decisions import DecisionHandler
from epoch.domain import Decider
from epoch.errors import InvalidQuery
from epoch.queries import Query, QueryItem
from epoch.records import NewEvent, RecordedEvent
from epoch.snapshots import Snapshots
from epoch.stores import EventStore, SupportsQuerySnapshots, query_snapshot_store

__all__ = ["Counted", "QuerySnapshotContract", "Tally"]

KEY = "k" * 64
_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Tally:
    """Add one event tagged ``tally:{name}``."""

    name: str


@dataclass(frozen=True, slots=True)
class Counted:
    name: str


def _count(count: int, event: Counted) -> int:
    return count + 1


tallies = Decider(decide=lambda command, count: [Counted(command.name)], evolve=_count, initial_state=0)
"""A decider whose state is how many events it folded."""
_codec = Codec([Counted], tags=lambda event: (f"tally:{event.name}",))


def _query(command: Tally) -> Query:
    return Query([QueryItem(tags=(f"tally:{command.name}",))])


class _CountingReads:
    """``store``, counting what each ``read_query`` asked for and yielded, with its query snapshots."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def read_query(self, query: Query, after: int = 0, limit: int | None = None) -> AsyncIterator[RecordedEvent]:
        self.reads.append((after, 0))
        async for recorded in self.store.read_query(query, after, limit):
            self.reads[-1] = (after, self.reads[-1][1] + 1)
            yield recorded


SupportsQuerySnapshots.register(_CountingReads)


class QuerySnapshotContract:
    """Query snapshots: saved and loaded against the store's erasure count, and used by decisions."""

    @staticmethod
    def capable(store: EventStore) -> SupportsQuerySnapshots:
        found = query_snapshot_store(store)
        assert found is not None, f"{type(store).__name__} does not declare SupportsQuerySnapshots"
        return found

    @staticmethod
    def handler(store: EventStore, every: int = 5) -> DecisionHandler[Tally, int, Counted]:
        return DecisionHandler(
            store,
            tallies,
            _codec,
            query=_query,
            stream=lambda command: f"tally-{command.name}",
            snapshots=Snapshots(every=every, state_type=int),
        )

    # -- the store entries ------------------------------------------------------------------------

    async def test_a_saved_snapshot_loads_with_the_erasure_count(self, store: EventStore) -> None:
        snapshots = self.capable(store)
        assert await snapshots.load_query_snapshot(KEY, 1) == (None, 0)
        await store.append("padding-1", [NewEvent("E", b"{}") for _ in range(7)])  # the head is at 7 or past it
        assert await snapshots.save_query_snapshot(KEY, 1, 7, 3, 2, b"state", 0, "label") is True
        found, erasures = await snapshots.load_query_snapshot(KEY, 1)
        assert found is not None and erasures == 0
        assert (found.key, found.schema_version, found.position, found.count, found.version) == (KEY, 1, 7, 3, 2)
        assert (found.data, found.erasures, found.label) == (b"state", 0, "label")
        assert found.taken_at.utcoffset() is not None
        assert await snapshots.load_query_snapshot(KEY, 2) == (None, 0)  # another schema version
        [status] = await snapshots.query_snapshot_status()
        assert (status.key, status.schema_version, status.position, status.count, status.label) == (
            KEY, 1, 7, 3, "label",
        )  # fmt: skip
        assert status.usable is True

    @pytest.mark.parametrize("how", ["hard delete", "truncate", "scavenge"])
    async def test_each_erasure_of_an_event_counts_and_makes_snapshots_unusable(
        self, store: EventStore, how: str
    ) -> None:
        snapshots = self.capable(store)
        await store.append("kept-1", [NewEvent("E", b"{}")])
        await store.append("gone-1", [NewEvent("E", b"{}"), NewEvent("E", b"{}")])
        assert await snapshots.save_query_snapshot(KEY, 1, 1, 1, None, b"state", 0) is True
        if how == "hard delete":
            await store.delete_stream("gone-1", hard=True)
        elif how == "truncate":
            await store.truncate_before("gone-1", 1)
        else:
            await store.set_stream_limits("gone-1", max_count=1)
            assert await store.scavenge() == 1
        assert await snapshots.load_query_snapshot(KEY, 1) == (None, 1)
        assert [s.usable for s in await snapshots.query_snapshot_status()] == [False]
        assert await snapshots.save_query_snapshot(KEY, 1, 3, 1, None, b"again", 0) is False  # the count moved
        assert await snapshots.save_query_snapshot(KEY, 1, 3, 1, None, b"again", 1) is True
        found, _ = await snapshots.load_query_snapshot(KEY, 1)
        assert found is not None and (found.data, found.erasures) == (b"again", 1)

    async def test_what_erases_nothing_does_not_count(self, store: EventStore) -> None:
        snapshots = self.capable(store)
        await store.append("one-1", [NewEvent("E", b"{}"), NewEvent("E", b"{}")])
        await store.append("two-1", [NewEvent("E", b"{}"), NewEvent("E", b"{}")])
        await store.delete_stream("one-1")  # soft: read_query still shows its events
        await store.truncate_before("two-1", 0)
        await store.delete_stream("none-1", hard=True)  # never written: a tombstone, nothing erased
        await store.set_stream_limits("two-1", max_count=5)
        assert await store.scavenge() == 0
        assert await snapshots.load_query_snapshot(KEY, 1) == (None, 0)

    async def test_an_older_snapshot_never_replaces_a_newer_one(self, store: EventStore) -> None:
        snapshots = self.capable(store)
        await store.append("padding-1", [NewEvent("E", b"{}") for _ in range(10)])  # the head is at 10 or past it
        assert await snapshots.save_query_snapshot(KEY, 1, 10, 4, None, b"newer", 0) is True
        assert await snapshots.save_query_snapshot(KEY, 1, 9, 3, None, b"older", 0) is True  # kept the newer
        assert await snapshots.save_query_snapshot(KEY, 2, 9, 3, None, b"schema 2", 0) is True
        found, _ = await snapshots.load_query_snapshot(KEY, 1)
        assert found is not None and found.data == b"newer"
        assert [(s.schema_version, s.position) for s in await snapshots.query_snapshot_status()] == [(1, 10), (2, 9)]
        assert await snapshots.drop_query_snapshots() == 2
        assert await snapshots.query_snapshot_status() == []
        assert await snapshots.drop_query_snapshots() == 0

    async def test_a_snapshot_past_the_stores_head_is_not_loaded_nor_listed(self, store: EventStore) -> None:
        snapshots = self.capable(store)
        await store.append("padding-1", [NewEvent("E", b"{}")])
        head = await store.head_position()
        assert await snapshots.save_query_snapshot(KEY, 1, head + 1, 3, None, b"state", 0) is True
        assert await snapshots.load_query_snapshot(KEY, 1) == (None, 0)  # no save could have read it: not one
        assert await snapshots.query_snapshot_status() == []
        assert await snapshots.save_query_snapshot(KEY, 1, head, 2, None, b"at the head", 0) is True  # replaces it
        found, _ = await snapshots.load_query_snapshot(KEY, 1)
        assert found is not None and (found.position, found.data) == (head, b"at the head")
        assert [(s.position, s.count) for s in await snapshots.query_snapshot_status()] == [(head, 2)]

    @pytest.mark.parametrize(
        "key",
        ["", "a b", "k" * 129, "ключ", "a\x00", 7, None],
        ids=["empty", "space", "129", "cyrillic", "nul", "int", "none"],
    )
    async def test_a_bad_key_is_refused(self, store: EventStore, key: object) -> None:
        snapshots = self.capable(store)
        message = f"a query snapshot key must be 1 to 128 ASCII letters, digits, '-', '_' or '.', not {key!r}"
        with pytest.raises(InvalidQuery) as loading:
            await snapshots.load_query_snapshot(cast(str, key), 1)
        with pytest.raises(InvalidQuery) as saving:
            await snapshots.save_query_snapshot(cast(str, key), 1, 0, 0, None, b"", 0)
        assert str(loading.value) == str(saving.value) == message
        assert await snapshots.query_snapshot_status() == []

    @pytest.mark.parametrize("bad", [-1, 0, 2**63, 2**100, True, 1.0, float("nan"), "1", None])
    async def test_bad_numbers_are_refused_and_nothing_is_stored(self, store: EventStore, bad: object) -> None:
        snapshots = self.capable(store)
        lowest = {"schema_version": 1, "position": 0, "count": 0, "version": 0, "erasures": 0}
        for name, least in lowest.items():
            valid = type(bad) is int and least <= bad <= _MAX
            if valid or (bad is None and name == "version"):  # a version of None: the stream had no event
                continue
            args: dict[str, Any] = {"schema_version": 1, "position": 3, "count": 2, "version": None, "erasures": 0}
            args[name] = bad
            with pytest.raises(InvalidQuery) as caught:
                await snapshots.save_query_snapshot(KEY, data=b"{}", **args)
            assert (
                str(caught.value) == f"query snapshot {KEY}: {name} must be an int from {least} to {_MAX}, not {bad!r}"
            )
        if not (type(bad) is int and 1 <= bad <= _MAX):
            with pytest.raises(InvalidQuery) as caught:
                await snapshots.load_query_snapshot(KEY, cast(int, bad))
            assert (
                str(caught.value)
                == f"query snapshot {KEY}: schema_version must be an int from 1 to {_MAX}, not {bad!r}"
            )
        assert await snapshots.query_snapshot_status() == []

    async def test_bad_data_or_label_is_refused_and_a_label_is_made_storable(self, store: EventStore) -> None:
        snapshots = self.capable(store)
        with pytest.raises(InvalidQuery) as data:
            await snapshots.save_query_snapshot(KEY, 1, 0, 0, None, cast(bytes, "text"), 0)
        with pytest.raises(InvalidQuery) as label:
            await snapshots.save_query_snapshot(KEY, 1, 0, 0, None, b"", 0, cast(str, b"label"))
        assert str(data.value) == f"query snapshot {KEY}: data must be bytes, not str"
        assert str(label.value) == f"query snapshot {KEY}: label must be a str, not bytes"
        assert await snapshots.query_snapshot_status() == []
        assert await snapshots.save_query_snapshot(KEY, 1, 0, 0, None, b"", 0, "a\x00b\ud800" + "x" * 2000) is True
        found, _ = await snapshots.load_query_snapshot(KEY, 1)
        assert found is not None and found.label == "a\ufffdb?" + "x" * 996

    # -- what a DecisionHandler does with them ------------------------------------------------------

    async def test_a_decision_starts_from_the_snapshot_until_an_erasure(self, store: EventStore) -> None:
        handler = self.handler(store)
        for _ in range(12):  # snapshots after the decisions that fold 5 and 10 events
            await handler.execute(Tally("t"))
        positions = [recorded.position async for recorded in store.read_all()]
        [status] = await self.capable(store).query_snapshot_status()
        assert (status.count, status.position, status.label) == (10, positions[9], "tag:tally:t")

        counting = _CountingReads(store)
        result = await self.handler(cast(EventStore, counting)).execute(Tally("t"))
        assert (counting.reads, result.state) == ([(positions[9], 2)], 13)

        await store.append("other-1", [NewEvent("E", b"{}"), NewEvent("E", b"{}")])
        await store.truncate_before("other-1", 1)  # an erasure anywhere: every query snapshot is unusable
        counting.reads.clear()
        result = await self.handler(cast(EventStore, counting)).execute(Tally("t"))
        assert (counting.reads, result.state) == ([(0, 13)], 14)
        [status] = await self.capable(store).query_snapshot_status()
        assert (status.count, status.usable) == (13, True)
