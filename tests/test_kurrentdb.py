"""The KurrentDB store: the shared contract against an in-process fake of KurrentDB's gRPC protocol
(tests/kurrentdb_fake.py: proves the mapping onto ``kurrentdbclient``), and against a real server
whenever ``EPOCH_TEST_KURRENTDB_URI`` is set (e.g. ``kurrentdb://localhost:2113?tls=false``; each test
runs in its own namespace on that server). Without it, the real-server class is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import hypothesis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test
from kurrentdbclient.exceptions import (
    AccessDeniedError,
    MaximumAppendSizeExceededError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)
from msgspec.structs import replace
from typer.testing import CliRunner

from epoch.cli import app as cli
from epoch.codec import Codec
from epoch.errors import (
    ConfigurationError,
    DuplicateEventId,
    EpochError,
    InvalidEvent,
    InvalidStreamName,
    InvalidVersion,
    NotSupported,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from epoch.projections import ParkedEvent, ProjectionRunner, Retry, default_checkpoints, default_parking
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import ANY, NO_STREAM, AppendResult, EventEnvelope, NewEvent, RecordedEvent
from epoch.stores import open_store
from epoch.stores._checks import GLOBAL_LOG, check_categories, check_read, check_stream_name
from epoch.stores.kurrentdb import DEFAULT_KURRENTDB_MAX_EVENT_SIZE, KurrentDBEventStore
from epoch.stores.kurrentdb.errors import driver_errors
from epoch.stores.kurrentdb.mapping import split_tags
from epoch.testing import collect
from epoch.testing import new_events as new
from epoch.testing.contract import EventStoreContract
from epoch.testing.contract_snapshots import SnapshotContract
from tests.hostile import any_text, hostile_names, is_valid_name
from tests.kurrentdb_fake import FakeKurrentDB
from tests.test_model import STREAMS, make_machine

REAL_URI = os.environ.get("EPOCH_TEST_KURRENTDB_URI")


@pytest.fixture
def fake() -> Iterator[FakeKurrentDB]:
    with FakeKurrentDB() as server:
        yield server


class TestKurrentDBOnFake(EventStoreContract):
    """The contract through the real client against the fake server."""

    @pytest.fixture
    async def store(self, fake: FakeKurrentDB) -> AsyncIterator[KurrentDBEventStore]:
        async with open_store(fake.uri) as store:
            assert isinstance(store, KurrentDBEventStore)
            yield store


class TestKurrentDBSnapshotsOnFake(SnapshotContract):
    """Snapshots in companion streams, through the real client against the fake server."""

    @pytest.fixture
    async def store(self, fake: FakeKurrentDB) -> AsyncIterator[KurrentDBEventStore]:
        async with open_store(fake.uri) as store:
            assert isinstance(store, KurrentDBEventStore)
            yield store


class Namespaced:
    """One test's private view of a shared KurrentDB server (which has no way to empty itself).

    Stream names get a per-test tag on their category (``users-1`` is stored as ``users<tag>-1``), reads
    start at the head the server had when the test began and keep only tagged streams, and errors name the
    streams as the test wrote them. Only the real-server tests use it.
    """

    def __init__(self, store: KurrentDBEventStore, baseline: int) -> None:
        self.store = store
        self.baseline = baseline
        self.tag = f"T{uuid4().hex[:10]}"
        self.max_event_size = store.max_event_size
        self.detects_duplicate_ids_across_streams = store.detects_duplicate_ids_across_streams
        self.erases_at_once = store.erases_at_once
        self.scavenge_counts = store.scavenge_counts
        self.tombstones_keep_version = store.tombstones_keep_version

    def _in(self, name: Any) -> Any:
        try:
            check_stream_name(name)
        except InvalidStreamName:
            return name  # the store refuses it as the test expects
        category, dash, rest = name.partition("-")
        return f"{category}{self.tag}{dash}{rest}"

    def _categories(self, categories: Any) -> list[str] | None:
        names = check_categories(categories)
        return None if names is None else [self._in(name) for name in names]

    def _out(self, name: str) -> str | None:
        category, dash, rest = name.partition("-")
        return f"{category.removesuffix(self.tag)}{dash}{rest}" if category.endswith(self.tag) else None

    def _record(self, r: RecordedEvent) -> RecordedEvent | None:
        stream = self._out(r.stream)
        if stream is None:
            return None
        return RecordedEvent(stream, r.version, r.position, r.id, r.type, r.data, r.metadata, r.recorded_at, r.tags)

    def _error(self, exc: EpochError) -> EpochError:
        args = [a.replace(self.tag, "") if isinstance(a, str) else a for a in exc.args]
        return type(exc)(*args)

    async def _call(self, coroutine: Any) -> Any:
        try:
            return await coroutine
        except EpochError as exc:
            raise self._error(exc) from exc

    async def _each(self, iterator: Any) -> AsyncIterator[RecordedEvent]:
        try:
            async with aclosing(iterator) as events:
                async for r in events:
                    if (mine := self._record(r)) is not None:
                        yield mine
        except EpochError as exc:
            raise self._error(exc) from exc

    async def append(self, stream: Any, events: Any, expected_version: Any = ANY) -> AppendResult:
        result = await self._call(self.store.append(self._in(stream), events, expected_version))
        return AppendResult(stream, result.version, result.position, result.positions, result.recorded_at)

    async def read_stream(self, stream: Any, *args: Any, **kwargs: Any) -> AsyncIterator[RecordedEvent]:
        async for r in self._each(self.store.read_stream(self._in(stream), *args, **kwargs)):
            yield r

    async def read_all(
        self, after: int = 0, limit: int | None = None, categories: Any = None
    ) -> AsyncIterator[RecordedEvent]:
        check_read(GLOBAL_LOG, after, limit, categories=categories)  # the store's own prologue, refused alike
        source = self.store.read_all(max(after, self.baseline), None, self._categories(categories))
        count = 0
        async for r in self._each(source):
            if limit is not None and count >= limit:
                return
            count += 1
            yield r

    async def subscribe(self, after: int = 0, categories: Any = None) -> AsyncIterator[RecordedEvent]:
        check_read(GLOBAL_LOG, after, categories=categories)
        async for r in self._each(self.store.subscribe(max(after, self.baseline), self._categories(categories))):
            yield r

    async def stream_version(self, stream: Any) -> int | None:
        return await self._call(self.store.stream_version(self._in(stream)))  # type: ignore[no-any-return]

    async def head_position(self) -> int:
        last = 0
        async for r in self._each(self.store.read_all(self.baseline)):
            last = r.position
        return last

    async def get_event(self, id: Any, stream: Any = None) -> RecordedEvent | None:
        found = await self._call(self.store.get_event(id, None if stream is None else self._in(stream)))
        return None if found is None else self._record(found)

    async def delete_stream(self, stream: Any, expected_version: Any = ANY, hard: Any = False) -> None:
        await self._call(self.store.delete_stream(self._in(stream), expected_version, hard))

    async def truncate_before(self, stream: Any, version: Any) -> None:
        await self._call(self.store.truncate_before(self._in(stream), version))

    async def set_stream_limits(self, stream: Any, max_count: Any = None, max_age: Any = None) -> None:
        await self._call(self.store.set_stream_limits(self._in(stream), max_count, max_age))

    async def scavenge(self, stream: Any = None) -> int:
        return await self._call(self.store.scavenge(None if stream is None else self._in(stream)))  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.store.close()


@pytest.mark.skipif(
    not REAL_URI, reason="set EPOCH_TEST_KURRENTDB_URI=kurrentdb://host:2113?tls=false to run against a real server"
)
class TestKurrentDBOnServer(EventStoreContract):
    """The contract against a real KurrentDB node, each test in its own namespace (see ``Namespaced``)."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[Any]:
        assert REAL_URI is not None
        async with open_store(REAL_URI) as store:
            assert isinstance(store, KurrentDBEventStore)
            yield Namespaced(store, await store.head_position())

    async def test_stream_names_round_trip(self, store: Any, name: str) -> None:
        if len(name) + len(store.tag) > 512:
            pytest.skip("a per-test tag does not fit into a 512-character name")
        await super().test_stream_names_round_trip(store, name)

    test_stream_names_round_trip.pytestmark = EventStoreContract.test_stream_names_round_trip.pytestmark  # type: ignore[attr-defined]


# -- what only the KurrentDB store shows (on the fake) -----------------------------------------------


@pytest.fixture
async def store(fake: FakeKurrentDB) -> AsyncIterator[KurrentDBEventStore]:
    async with KurrentDBEventStore(fake.uri) as opened:
        yield opened


async def test_positions_are_commit_positions_plus_one(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    result = await store.append("users-1", new(3))
    commits = [e.commit for e in fake.streams.log if e.stream == "users-1"]
    assert list(result.positions) == [c + 1 for c in commits]
    assert result.positions[1] - result.positions[0] > 1  # not dense: KurrentDB commit positions are offsets
    everything = await collect(store.read_all())
    assert [r.stream for r in everything] == ["users-1"] * 3  # the fake's $settings event is skipped
    assert await collect(store.read_all(after=result.positions[1])) == everything[2:]


async def test_system_streams_are_hidden_and_refused(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    await store.append("s-1", new(2))
    await store.delete_stream("s-1")
    assert ("$$s-1", 0, "$metadata") in fake.events()  # KurrentDB's soft delete is stream metadata
    assert [r.stream for r in await collect(store.read_all())] == ["s-1", "s-1"]
    assert await store.head_position() == (await collect(store.read_all()))[-1].position
    with pytest.raises(InvalidStreamName) as info:
        await store.append("$ce-users", new(1))
    assert str(info.value) == "invalid stream name '$ce-users': names starting with '$' are KurrentDB system streams"
    with pytest.raises(InvalidStreamName):
        await collect(store.read_stream("$all"))


async def test_category_filter_is_exact(store: KurrentDBEventStore) -> None:
    await store.append("users-1", new(1))
    await store.append("usersX-1", new(1))
    await store.append("users", new(1))
    assert [r.stream for r in await collect(store.read_all(categories="users"))] == ["users-1", "users"]


async def test_content_type_follows_the_data(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    await store.append("s-1", [NewEvent("J", b'{"a": 1}'), NewEvent("B", b"\x00\xff"), NewEvent("E", b"")])
    types = {e.type: e.content_type for e in fake.streams.log if e.stream == "s-1"}
    assert types == {"J": "application/json", "B": "application/octet-stream", "E": "application/octet-stream"}


async def test_duplicates_inside_a_batch_and_in_the_same_place(store: KurrentDBEventStore) -> None:
    events = new(2)
    first = await store.append("s-1", events, NO_STREAM)
    # found among the stream's newest events: epoch answers it as a replay before the server sees it
    assert await store.append("s-1", events, NO_STREAM) == replace(first, replayed=True)
    with pytest.raises(DuplicateEventId):
        await store.append("s-2", [events[0], events[0]])
    with pytest.raises(DuplicateEventId) as info:  # found among the stream's newest events
        await store.append("s-1", [*new(1), events[0]], 1)
    assert (info.value.existing_stream, info.value.existing_version) == ("s-1", 0)


async def test_without_the_id_check_kurrentdb_decides(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri, id_check_window=0) as store:
        events = new(2)
        first = await store.append("s-1", events, NO_STREAM)
        reads = fake.calls["Read"]
        assert await store.append("s-1", events, NO_STREAM) == first  # the server's idempotent append
        assert await store.append("s-1", events, ANY) == first
        assert fake.calls["BatchAppend"] == 3
        with pytest.raises(WrongExpectedVersion) as info:
            await store.append("s-1", [*new(1), events[0]], 0)
        assert info.value.actual == 1
        await store.append("s-1", [*new(1), events[0]], 1)  # undetected: a second copy of events[0]
        assert [r.id for r in await collect(store.read_stream("s-1"))].count(events[0].id) == 2
        assert fake.calls["Read"] > reads


async def test_get_event_with_a_stream_hint(store: KurrentDBEventStore) -> None:
    events = new(3)
    await store.append("s-1", events)
    await store.append("s-2", new(2))
    found = await store.get_event(events[1].id, stream="s-1")
    assert found is not None and (found.stream, found.version) == ("s-1", 1)
    assert await store.get_event(events[1].id, stream="s-2") is None
    assert await store.get_event(uuid4(), stream="nobody-1") is None
    await store.delete_stream("s-1")
    assert await store.get_event(events[1].id, stream="s-1") is None
    assert (await store.get_event(events[1].id)) == found  # the $all scan still finds it


async def test_server_append_size_limit_is_an_invalid_event(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri, max_event_size=2 * 1024 * 1024) as big:
        with pytest.raises(InvalidEvent) as info:
            await big.append("s-1", [NewEvent("Big", b"x" * (1024 * 1024 + 1))])
        assert (
            str(info.value)
            == "s-1: invalid event at index 0: the batch exceeds the server's MaxAppendSize: Max size is 1048576"
        )
    async with KurrentDBEventStore(fake.uri) as default:
        assert default.max_event_size == DEFAULT_KURRENTDB_MAX_EVENT_SIZE
        half = b"x" * (512 * 1024)  # each fits epoch's limit, the two do not fit the server's
        with pytest.raises(InvalidEvent) as info:  # a batch over the server's limit
            await default.append("s-1", [NewEvent("Half", half), NewEvent("Half", half)])
        assert (
            str(info.value)
            == "s-1: invalid event at index 0: the batch exceeds the server's MaxAppendSize: Max size is 1048576"
        )
        assert await default.stream_version("s-1") is None


async def test_delete_rechecks_after_a_concurrent_append(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    await store.append("s-1", new(1))
    original = store._last_event
    raced = False

    async def racing_last_event(stream: str, deleted_raises: bool = False) -> Any:
        nonlocal raced
        last = await original(stream, deleted_raises)
        if not raced:
            raced = True
            await store.append(stream, new(1))  # lands between the check and the delete
        return last

    store._last_event = racing_last_event  # type: ignore[method-assign]
    await store.delete_stream("s-1")
    assert fake.calls["Delete"] == 2
    assert await store.stream_version("s-1") is None
    store._last_event = original  # type: ignore[method-assign]
    assert (await store.append("s-1", new(1), NO_STREAM)).version == 2


async def test_subscription_is_released_on_aclose(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    await store.append("s-1", new(1))
    subscription = store.subscribe()
    assert (await anext(subscription)).stream == "s-1"
    await subscription.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while any(t.name.startswith("fake-kurrentdb") and t.is_alive() for t in _busy_threads(fake)):
        assert time.monotonic() < deadline, "the server still streams to a closed subscription"
        await asyncio.sleep(0.05)


def _busy_threads(fake: FakeKurrentDB) -> list[Any]:
    """Server threads still inside the subscription's Read call (the fake's subscription loop)."""
    import sys
    import threading

    frames = sys._current_frames()
    return [t for t in threading.enumerate() if t.ident in frames and _in_subscription(frames[t.ident])]


def _in_subscription(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "_subscribe_all":
            return True
        frame = frame.f_back
    return False


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with KurrentDBEventStore(f"kurrentdb://127.0.0.1:{port}?tls=false") as store:
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s-1", new(1))
        assert info.value.stream == "s-1"
        assert info.value.__cause__ is not None
        with pytest.raises(StoreUnavailable):
            await collect(store.read_all())


async def test_server_going_away_ends_a_subscription_with_store_unavailable(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as store:
        await store.append("s-1", new(1))
        subscription = store.subscribe()
        await anext(subscription)
        fake.stop()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(anext(subscription), 10)
        await subscription.aclose()  # type: ignore[attr-defined]


async def test_urls() -> None:
    async with open_store("esdb://127.0.0.1:1?tls=false&max_event_size=1000") as store:
        assert isinstance(store, KurrentDBEventStore)
        assert store.max_event_size == 1000
        assert store.uri == "esdb://127.0.0.1:1?tls=false"
    with pytest.raises(ConfigurationError):
        await open_store("kurrentdb://127.0.0.1:1?nonsense=1")
    with pytest.raises(ConfigurationError):
        await open_store("kurrentdb://127.0.0.1:1?max_event_size=big")


# -- checkpoints and parked events live on the server (companion streams under "$epoch-") --------------


@dataclass(frozen=True)
class Happened:
    n: int


CODEC = Codec([Happened])


class Recorder:
    """A projection of the ``users`` category that remembers what it saw and fails on ``poison``."""

    categories = "users"

    def __init__(self, name: str = "recorder", policy: str = "stop", poison: tuple[int, ...] = ()) -> None:
        self.name = name
        self.policy = policy
        self.poison = set(poison)
        self.seen: list[tuple[str, int]] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if envelope.data.n in self.poison:
            raise RuntimeError(f"poisoned {envelope.data.n}")
        self.seen.append((envelope.stream, envelope.version))

    async def reset(self) -> None:
        self.seen.clear()


FAST = Retry(retries=0, backoff=0.001)


async def test_a_new_runner_on_a_new_store_resumes_from_the_checkpoint(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as first:
        await first.append("orders-1", new(1))
        await first.append("users-1", new(3))
        recorder = Recorder()
        await ProjectionRunner(first, CODEC, [recorder]).run_until_idle()
        assert recorder.seen == [("users-1", 0), ("users-1", 1), ("users-1", 2)]
        head = await first.head_position()
    async with KurrentDBEventStore(fake.uri) as second:  # another process, as far as the server knows
        later = await second.append("users-1", new(2, "later"))
        recorder = Recorder()
        runner = ProjectionRunner(second, CODEC, [recorder])
        assert await runner.checkpoints.load("recorder") == head
        await runner.run_until_idle()
        assert recorder.seen == [("users-1", 3), ("users-1", 4)]
        assert await runner.checkpoints.load("recorder") == later.position
    # One checkpoint stream per projection, kept to its newest event, plus the index of names.
    assert ("$epoch-checkpoints", 0, "CheckpointNamed") in fake.events()
    assert [e for e in fake.events() if e[0] == "$epoch-checkpoints"] == [("$epoch-checkpoints", 0, "CheckpointNamed")]
    assert fake.metadata("$epoch-checkpoint-recorder") == {"$maxCount": 1}
    assert [e[2] for e in fake.events() if e[0] == "$epoch-checkpoint-recorder"] == ["Checkpoint"] * 2


async def test_checkpoint_streams_are_hidden_from_reads(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as store:
        written = await store.append("users-1", new(2))
        await ProjectionRunner(store, CODEC, [Recorder(policy="park", poison=(1,))], retry=FAST).run_until_idle()
        assert {e[0] for e in fake.events()} >= {"$epoch-checkpoint-recorder", "$epoch-parked-recorder"}
        assert [(r.stream, r.version) for r in await collect(store.read_all())] == [("users-1", 0), ("users-1", 1)]
        assert await collect(store.read_all(categories="$epoch")) == []
        assert await store.head_position() == written.position
        subscription = store.subscribe()
        assert [(await anext(subscription)).position for _ in range(2)] == list(written.positions)
        await store.append("users-2", new(1))  # the next live event is the user's, not a checkpoint
        assert (await asyncio.wait_for(anext(subscription), 5)).stream == "users-2"
        await subscription.aclose()  # type: ignore[attr-defined]
        with pytest.raises(InvalidStreamName):
            await collect(store.read_stream("$epoch-checkpoint-recorder"))


async def test_checkpoint_store_round_trips(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as store:
        checkpoints = default_checkpoints(store)
        assert await checkpoints.load("a") == 0
        assert await checkpoints.list() == []
        await checkpoints.save("b", 2**63 + 5, 12.5)
        await checkpoints.mark_failing("a", "RuntimeError: boom")
        await checkpoints.mark_failing("a", "RuntimeError: again")
    async with KurrentDBEventStore(fake.uri) as store:
        checkpoints = default_checkpoints(store)
        a, b = await checkpoints.list()
        assert (a.name, a.position, a.error, a.events_per_second) == ("a", 0, "RuntimeError: again", 0.0)
        assert a.failing_since is not None and a.updated_at is None
        assert (b.name, b.position, b.error, b.failing_since, b.events_per_second) == ("b", 2**63 + 5, None, None, 12.5)
        assert b.updated_at is not None and abs(b.updated_at - time.time()) < 60
        first_failure = a.failing_since
        await checkpoints.mark_failing("a", "RuntimeError: third")
        assert (await checkpoints.list())[0].failing_since == first_failure  # failing since the first failure
        await checkpoints.save("a", 7)
        [a] = [c for c in await checkpoints.list() if c.name == "a"]
        assert (a.position, a.error, a.failing_since) == (7, None, None)
        await checkpoints.delete("a")
        await checkpoints.delete("never-saved")
        assert await checkpoints.load("a") == 0
        assert [c.name for c in await checkpoints.list()] == ["b"]
        await checkpoints.save("a", 9)
        assert [(c.name, c.position) for c in await checkpoints.list()] == [("a", 9), ("b", 2**63 + 5)]
    assert [e for e in fake.events() if e[0] == "$epoch-checkpoints"] == [
        ("$epoch-checkpoints", 0, "CheckpointNamed"),
        ("$epoch-checkpoints", 1, "CheckpointNamed"),
    ]


async def test_parked_events_survive_a_new_runner(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as first:
        await first.append("users-1", new(3))
        bad = (await collect(first.read_stream("users-1")))[1]
        recorder = Recorder(policy="park", poison=(1,))
        await ProjectionRunner(first, CODEC, [recorder], retry=FAST).run_until_idle()
        assert recorder.seen == [("users-1", 0), ("users-1", 0), ("users-1", 2)]  # the batch, then one by one
    async with KurrentDBEventStore(fake.uri) as second:
        recorder = Recorder(policy="park", poison=(1,))
        runner = ProjectionRunner(second, CODEC, [recorder], retry=FAST)
        [parked] = await runner.parking.list("recorder")
        assert parked.event == bad  # the original event: id, stream, version, position, bytes, time
        assert (parked.projection, parked.error) == ("recorder", "RuntimeError: poisoned 1")
        assert [s.parked for s in await runner.status()] == [1]
        assert await runner.replay_parked("recorder") == 0  # still failing: stays parked, once
        assert [p.event for p in await runner.parking.list()] == [bad]
        recorder.poison.clear()
        assert await runner.replay_parked("recorder") == 1
        assert recorder.seen == [("users-1", 1)]
        assert await runner.parking.list("recorder") == []
    async with KurrentDBEventStore(fake.uri) as third:
        assert await default_parking(third).list() == []


async def test_rebuild_clears_parked_events_on_the_server(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as store:
        await store.append("users-1", new(3))
        recorder = Recorder(policy="park", poison=(0, 2))
        runner = ProjectionRunner(store, CODEC, [recorder], retry=FAST)
        await runner.run_until_idle()
        assert [p.event.version for p in await runner.parking.list("recorder")] == [0, 2]
        recorder.poison = {2}
        await runner.rebuild("recorder")
        assert recorder.seen == [("users-1", 0), ("users-1", 1)] * 2  # the batch, then one by one
    async with KurrentDBEventStore(fake.uri) as again:
        assert [(p.projection, p.event.version) for p in await default_parking(again).list()] == [("recorder", 2)]
        assert await default_checkpoints(again).load("recorder") == await again.head_position()


async def test_parked_bytes_round_trip(fake: FakeKurrentDB) -> None:
    async with KurrentDBEventStore(fake.uri) as store:
        await store.append("bytes-1", [NewEvent("Odd", bytes(range(256)), '{"who": "Zoë"}'.encode())])
        [odd] = await collect(store.read_stream("bytes-1"))
        parking = default_parking(store)
        await parking.park(ParkedEvent("p", odd, "E: first", 1.5))
        await parking.park(ParkedEvent("p", odd, "E: second", 2.5))  # the same event again: the latest error
        await parking.park(ParkedEvent("q", odd, "E: q", 3.5))
    async with KurrentDBEventStore(fake.uri) as store:
        parking = default_parking(store)
        assert await parking.list("p") == [ParkedEvent("p", odd, "E: second", 2.5)]
        assert await parking.list() == [ParkedEvent("p", odd, "E: second", 2.5), ParkedEvent("q", odd, "E: q", 3.5)]
        await parking.clear("q")
        await parking.remove("p", odd.position + 1)  # not parked: nothing changes
        assert await parking.list() == [ParkedEvent("p", odd, "E: second", 2.5)]
        await parking.park(ParkedEvent("q", odd, "E: q again", 4.5))  # parking goes on after a clear
        assert [p.error for p in await parking.list("q")] == ["E: q again"]


async def test_projections_status_on_a_kurrentdb_url(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    await store.append("orders-1", new(1))
    await store.append("users-1", new(2))
    await ProjectionRunner(store, CODEC, [Recorder(policy="park", poison=(1,))], retry=FAST).run_until_idle()
    head = await store.head_position()

    def epoch(*args: str) -> Any:  # the CLI runs its own event loop: give it a thread
        done = CliRunner().invoke(cli, [*args, "--store", fake.uri, "--json"])
        assert done.exit_code == 0, done.output
        return json.loads(done.output)

    [row] = await asyncio.to_thread(epoch, "projections", "status")
    assert (row["name"], row["checkpoint"], row["head"], row["lag_events"], row["parked"], row["failing"]) == (
        "recorder",
        head,
        head,
        0,
        1,
        False,
    )
    streams = await asyncio.to_thread(epoch, "streams")
    assert [row["stream"] for row in streams] == ["orders-1", "users-1"]


async def test_refused_access_to_companion_streams_is_a_configuration_error(
    store: KurrentDBEventStore, fake: FakeKurrentDB
) -> None:
    await store.append("users-1", new(1))
    fake.streams.deny_system_streams = True  # a user outside $admins on a secured server
    with pytest.raises(ConfigurationError) as info:
        await ProjectionRunner(store, CODEC, [Recorder()]).run_until_idle()
    assert str(info.value) == (
        "$epoch-checkpoint-recorder: KurrentDB refused access (Access Denied): system streams ($...) need a user "
        "in $admins, or the server's $systemStreamAcl to allow it"
    )
    assert isinstance(info.value.__cause__, AccessDeniedError)
    with pytest.raises(ConfigurationError) as info:
        await default_parking(store).park(ParkedEvent("p", (await collect(store.read_all()))[0], "E", 1.0))
    assert (
        str(info.value)
        == "$epoch-parked: KurrentDB refused access (Access Denied): system streams ($...) need a user in $admins, or the server's $systemStreamAcl to allow it"
    )
    assert [e[0] for e in fake.events()] == ["$settings", "users-1"]


# -- the reference model (tests/test_model.py) against the fake, with KurrentDB's documented duplicates ----


def test_store_matches_reference_model_on_the_fake() -> None:
    servers: list[FakeKurrentDB] = []

    def open_url() -> str:  # a fresh server per example: a KurrentDB log cannot be emptied
        servers.append(FakeKurrentDB().start())
        return servers[-1].uri

    class KurrentDBMachine(make_machine(open_url)):  # type: ignore[misc]  # a class made at run time
        @rule(stream=st.sampled_from(STREAMS), other=st.sampled_from(STREAMS))
        def duplicate_elsewhere(self, stream: str, other: str) -> None:
            """No id index (detects_duplicate_ids_across_streams = False): an id stored in another
            stream is stored again; one this stream already holds is an idempotent no-op."""
            model = self.streams[stream]
            if not model.events or other == stream:
                return
            event = model.events[-1]
            head = self.run(self.store.head_position())
            target = self.streams[other]
            result = self.run(self.store.append(other, [event]))
            if any(e.id == event.id for e in target.events):
                assert self.run(self.store.head_position()) == head
                return
            self.log.append((other, len(target.events), event))
            target.events.append(event)
            assert (result.version, result.position) == (target.version, self.run(self.store.head_position()))

    try:
        run_state_machine_as_test(
            KurrentDBMachine,
            settings=settings(
                max_examples=15, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
            ),
        )
    finally:
        for server in servers:
            server.stop()


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def test_any_projection_name_round_trips_or_is_refused_clearly(fake: FakeKurrentDB) -> None:
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(fake.uri))
    checkpoints, parking = default_checkpoints(store), default_parking(store)
    loop.run_until_complete(store.append("users-1", new(1)))
    [event] = loop.run_until_complete(collect(store.read_all()))
    positions = iter(range(1, 10**6))

    @hypothesis.settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @hypothesis.given(name=st.one_of(any_text, hostile_names).filter(bool))
    def check(name: str) -> None:
        position = next(positions)

        async def attempt() -> None:
            before = fake.events()
            if _has_surrogate(name):  # gRPC sends names as UTF-8: refused before anything is sent
                with pytest.raises(InvalidStreamName) as info:
                    await checkpoints.save(name, position)
                assert (info.value.stream, info.value.reason) == (f"checkpoint-{name}", "contains a lone surrogate")
                with pytest.raises(InvalidStreamName) as info:
                    await parking.park(ParkedEvent(name, event, "E", 1.0))
                assert (info.value.stream, info.value.reason) == (f"parked-{name}", "contains a lone surrogate")
                assert fake.events() == before
                return
            await checkpoints.save(name, position)
            await parking.park(ParkedEvent(name, event, "E", 1.0))
            assert await checkpoints.load(name) == position
            assert (name, position) in [(c.name, c.position) for c in await checkpoints.list()]
            assert await parking.list(name) == [ParkedEvent(name, event, "E", 1.0)]

        loop.run_until_complete(attempt())

    try:
        check()
    finally:
        loop.run_until_complete(store.close())
        loop.close()


async def test_a_live_runner_saves_checkpoints_a_restarted_one_resumes(fake: FakeKurrentDB) -> None:
    async def until(condition: Any) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "the runner did not get there in time"
            await asyncio.sleep(0.02)

    async with KurrentDBEventStore(fake.uri) as first:
        recorder = Recorder()
        async with ProjectionRunner(first, CODEC, [recorder]) as runner:
            runner.start()
            await first.append("users-1", new(2))  # live: after the runner caught up on nothing
            await until(lambda: len(recorder.seen) == 2)
            live = await first.append("users-2", new(1))
            await until(lambda: len(recorder.seen) == 3)
            deadline = time.monotonic() + 10
            while await runner.checkpoints.load("recorder") != live.position:  # saved right after handling
                assert time.monotonic() < deadline, "the live runner did not save its checkpoint"
                await asyncio.sleep(0.02)
        assert await default_checkpoints(first).load("recorder") == live.position
    async with KurrentDBEventStore(fake.uri) as second:
        await second.append("users-3", new(1))
        recorder = Recorder()
        async with ProjectionRunner(second, CODEC, [recorder]) as runner:
            runner.start()
            await until(lambda: recorder.seen == [("users-3", 0)])
            await second.append("users-1", new(1, "more"))
            await until(lambda: len(recorder.seen) == 2)
        assert recorder.seen == [("users-3", 0), ("users-1", 2)]


@pytest.mark.parametrize("number", [2**63 - 1, 2**63, 2**64, 2**100])
async def test_numbers_beyond_the_protocol_behave_as_on_the_memory_store(
    store: KurrentDBEventStore, number: int
) -> None:
    """Guarantee 13: KurrentDB's protocol stops at 64 bits; epoch's ints do not. Every entry answers as
    the memory store does (an empty read past the end, a guard that fails with the actual version)."""
    from epoch.stores.memory import MemoryEventStore

    async def outcomes(s: Any) -> list[Any]:
        await s.append("a-1", new(2))
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "read_all after": lambda: collect(s.read_all(after=number)),
            "read_all limit": lambda: collect(s.read_all(limit=number)),
            "read_stream from": lambda: collect(s.read_stream("a-1", from_version=number)),
            "read_stream back": lambda: collect(s.read_stream("a-1", from_version=number, backwards=True)),
            "read_stream limit": lambda: collect(s.read_stream("a-1", limit=number)),
            "append": lambda: s.append("a-1", new(1), number),
            "append nothing": lambda: s.append("a-1", [], number),
            "delete": lambda: s.delete_stream("a-1", number),
        }
        found: list[tuple[object, ...]] = []
        for what, call in calls.items():
            try:
                result = await call()
            except Exception as exc:
                found.append((what, type(exc).__name__, str(exc)))
            else:
                found.append((what, [(r.stream, r.version) for r in result] if isinstance(result, list) else "ok"))
        subscription = s.subscribe(after=number)
        try:
            found.append(("subscribe", await asyncio.wait_for(anext(subscription), 0.3)))
        except TimeoutError:
            found.append(("subscribe", "nothing yet"))
        finally:
            await subscription.aclose()
        found.append(("stored", [(r.stream, r.version) for r in await collect(s.read_all())]))
        return found

    expected = await outcomes(MemoryEventStore())
    assert await outcomes(store) == expected
    assert ("append", "WrongExpectedVersion", f"a-1: expected version {number}, actual 1") in expected
    assert ("stored", [("a-1", 0), ("a-1", 1)]) in expected


async def test_an_empty_category_filter_reads_nothing_and_asks_nothing(
    store: KurrentDBEventStore, fake: FakeKurrentDB
) -> None:
    await store.append("users-1", new(1))
    reads = fake.calls["Read"]
    assert await collect(store.read_all(categories=[])) == []
    assert fake.calls["Read"] == reads  # the server would read "no filter" as "everything"
    assert [r.stream for r in await collect(store.read_all(categories=["users", "users"]))] == ["users-1"]


async def test_reads_check_their_arguments_before_asking_the_server(
    store: KurrentDBEventStore, fake: FakeKurrentDB
) -> None:
    await store.append("users-1", new(1))
    reads = fake.calls["Read"]
    nothing: Any = None
    one: Any = 1
    cases: list[tuple[Any, str]] = [
        (
            store.read_stream("users-1", backwards=one),
            "users-1: invalid version 'backwards=1'",
        ),
        (store.read_stream("users-1", limit=True), "users-1: invalid version 'limit=True'"),
        (store.read_all(after=nothing), "$all: invalid version None"),
        (store.subscribe(after=-1), "$all: invalid version -1"),
    ]
    for read, message in cases:
        with pytest.raises(InvalidVersion) as info:
            await collect(read)
        assert str(info.value) == message
    with pytest.raises(InvalidStreamName) as name:  # the system-stream rule comes before the bounds
        await collect(store.read_stream("$ce-users", from_version=-1))
    assert str(name.value) == ("invalid stream name '$ce-users': names starting with '$' are KurrentDB system streams")
    assert fake.calls["Read"] == reads
    assert [r.version for r in await collect(store.read_stream("users-1", limit=0))] == []
    assert fake.calls["Read"] == reads  # limit=0 matches nothing: not asked either


def mapped(exc: Exception, stream: str | None = "s-1", expected: Any = None) -> BaseException:
    """What ``driver_errors`` raises for ``exc``, checking that it keeps ``exc`` as the cause."""
    try:
        with driver_errors(stream, expected):
            raise exc
    except Exception as raised:
        assert raised is exc or raised.__cause__ is exc
        return raised
    raise AssertionError("driver_errors swallowed the error")


def test_the_driver_error_table() -> None:
    deleted = mapped(StreamIsDeletedError("tombstoned"))
    assert (type(deleted), str(deleted)) == (StreamDeleted, "s-1: the stream is deleted (last version no stream)")
    assert str(mapped(StreamIsDeletedError(), None)) == "$all: the stream is deleted (last version no stream)"
    refused = mapped(AccessDeniedError("Access Denied"))
    assert (type(refused), str(refused)) == (ConfigurationError, "s-1: KurrentDB refused access (Access Denied)")
    wrong = mapped(WrongCurrentVersionError(actual_version=3), expected=1)
    assert (type(wrong), str(wrong)) == (WrongExpectedVersion, "s-1: expected version 1, actual 3")
    missing = mapped(WrongCurrentVersionError(actual_version=-1), expected=NO_STREAM)  # -1: no stream
    assert (type(missing), str(missing)) == (WrongExpectedVersion, "s-1: expected version NO_STREAM, actual no stream")
    unguarded = mapped(WrongCurrentVersionError("moved"))  # no guard of the caller's: not a version conflict
    assert (type(unguarded), str(unguarded)) == (StoreUnavailable, "s-1: KurrentDB: WrongCurrentVersionError: moved")
    big = mapped(MaximumAppendSizeExceededError("2 MiB"))
    assert (type(big), str(big)) == (
        InvalidEvent,
        "s-1: invalid event at index 0: the batch exceeds the server's MaxAppendSize: 2 MiB",
    )
    for exc, message in [
        (NotFoundError(), "s-1: KurrentDB: NotFoundError"),
        (ConnectionResetError("reset by peer"), "s-1: KurrentDB: ConnectionResetError: reset by peer"),
    ]:
        lost = mapped(exc)
        assert (type(lost), str(lost)) == (StoreUnavailable, message)
    own = WrongExpectedVersion("s-1", 1, 2)
    assert mapped(own) is own  # epoch's own errors pass through untouched
    bug = KeyError("not a driver error")
    assert mapped(bug) is bug  # neither is anything outside the table


def test_any_stream_name_round_trips_or_is_refused_clearly(fake: FakeKurrentDB) -> None:
    """Guarantee 8 on KurrentDB: a valid name round-trips exactly, except that names starting with "$"
    are KurrentDB's system streams (refused); anything else is an InvalidStreamName, nothing stored."""
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(fake.uri))

    @hypothesis.settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @hypothesis.given(name=st.one_of(hostile_names, any_text))
    def check(name: str) -> None:
        async def attempt() -> None:
            before = fake.events()
            if not is_valid_name(name) or name.startswith("$"):
                with pytest.raises(InvalidStreamName) as info:
                    await store.append(name, new(1))
                assert info.value.stream == name
                with pytest.raises(InvalidStreamName):
                    await collect(store.read_stream(name))
                assert fake.events() == before
                return
            written = await store.append(name, new(1))
            [recorded] = await collect(store.read_stream(name, backwards=True, limit=1))
            assert (recorded.stream, recorded.version, recorded.position) == (name, written.version, written.position)
            assert [r.stream for r in await collect(store.read_all(after=written.position - 1))] == [name]

        loop.run_until_complete(attempt())

    try:
        check()
    finally:
        loop.run_until_complete(store.close())
        loop.close()


async def test_an_error_message_with_lone_surrogates_is_stored_escaped(store: KurrentDBEventStore) -> None:
    await store.append("users-1", new(1))
    [event] = await collect(store.read_all())
    parking = default_parking(store)
    await parking.park(ParkedEvent("p", event, "ValueError: bad name '\ud800'", 1.0))
    assert await parking.list("p") == [ParkedEvent("p", event, "ValueError: bad name '\\ud800'", 1.0)]
    checkpoints = default_checkpoints(store)
    await checkpoints.mark_failing("p", "ValueError: bad name '\ud800'")
    assert [c.error for c in await checkpoints.list()] == ["ValueError: bad name '\\ud800'"]


# -- dynamic consistency boundaries (as far as KurrentDB can) ---------------------------------------


async def test_tags_travel_in_the_metadata(store: KurrentDBEventStore, fake: FakeKurrentDB) -> None:
    events = [
        NewEvent("Registered", b"{}", b'{"$correlation_id": "c-1"}', tags=("user:1", "name:ada")),
        NewEvent("Tagged", b"{}", tags=("user:1",)),
        NewEvent("Spaced", b"{}", b' {"a": 1}\n', tags=("user:1",)),
        NewEvent("Plain", b"{}", b'{"b": 2}'),
    ]
    await store.append("users-1", events)
    stored = [e.metadata for e in fake.streams.log if e.stream == "users-1"]
    assert stored == [
        b'{"$tags":["user:1","name:ada"],"$metadata":{"$correlation_id": "c-1"}}',
        b'{"$tags":["user:1"]}',
        b'{"$tags":["user:1"],"$metadata":" {\\"a\\": 1}\\n"}',
        b'{"b": 2}',
    ]
    back = await collect(store.read_stream("users-1"))
    assert [(e.tags, e.metadata) for e in back] == [(e.tags, e.metadata) for e in events]
    assert [(e.tags, e.metadata) for e in await collect(store.read_all())] == [(e.tags, e.metadata) for e in events]
    found = await store.get_event(events[0].id)
    assert found is not None and (found.tags, found.metadata) == (events[0].tags, events[0].metadata)


async def test_metadata_that_only_looks_tagged_is_left_alone(store: KurrentDBEventStore) -> None:
    own = [b'{"$tags": "not a list"}', b'{"$tags":["a"],"other":1}', b'{"$tags":["a"]']
    for i, metadata in enumerate(own[:2]):
        await store.append(f"s-{i}", [NewEvent("T", b"{}", metadata)])
    assert [(e.tags, e.metadata) for e in await collect(store.read_all())] == [((), m) for m in own[:2]]
    assert split_tags(own[2]) == ((), own[2])  # not JSON at all (never written by epoch): as it is


async def test_read_query_scans_all_and_filters(store: KurrentDBEventStore) -> None:
    await store.append("course-1", [NewEvent("Defined", b"{}", tags=("course:1",))])
    second = await store.append("student-1", [NewEvent("Registered", b"{}", tags=("student:1",))])
    await store.append("course-1", [NewEvent("Subscribed", b"{}", tags=("course:1", "student:1"))])
    await store.append("course-1", [NewEvent("Renamed", b"{}")])
    both = Query([QueryItem(tags=("student:1",)), QueryItem(types=("Defined", "Renamed"))])
    assert [e.type for e in await collect(store.read_query(both))] == ["Defined", "Registered", "Subscribed", "Renamed"]
    assert [e.type for e in await collect(store.read_query(both, after=second.position))] == ["Subscribed", "Renamed"]
    assert [e.type for e in await collect(store.read_query(both, limit=2))] == ["Defined", "Registered"]
    assert await collect(store.read_query(both, limit=0)) == []
    assert await collect(store.read_query(Query([]))) == []
    assert await collect(store.read_query(both, after=2**70)) == []
    assert store.boundary_operations == frozenset({"read_query"})


async def test_atomic_boundary_writes_are_not_supported(store: KurrentDBEventStore) -> None:
    condition = AppendCondition(Query([QueryItem(tags=("username:ada",))]))
    with pytest.raises(NotSupported) as info:
        await store.append_with_condition("users-1", [NewEvent("Claimed", b"{}", tags=("username:ada",))], condition)
    assert (info.value.store, info.value.operation) == ("KurrentDBEventStore", "append_with_condition")
    assert str(info.value) == (
        "KurrentDBEventStore does not support append_with_condition: KurrentDB checks a guard per stream only, "
        "never a condition over a query of other streams' events, so the check and the append cannot be one "
        "atomic step"
    )
    with pytest.raises(NotSupported) as info:
        await store.append_many([("a-1", new(1), ANY), ("b-1", new(1), NO_STREAM)])
    assert str(info.value) == (
        "KurrentDBEventStore does not support append_many: kurrentdbclient's multi_append_to_stream "
        "(KurrentDB 25.1+) is atomic but carries metadata only as string-valued properties, so epoch's "
        "metadata bytes would not round-trip"
    )
    assert await collect(store.read_all()) == []
    with pytest.raises(InvalidStreamName):  # bad input still gets its own error first
        await store.append_with_condition("", [], condition)


@hypothesis.given(tags=st.lists(hostile_names, min_size=1, max_size=4))
async def test_hostile_tags_round_trip_through_the_metadata(store: KurrentDBEventStore, tags: list[str]) -> None:
    stream = f"hostile-{uuid4().hex}"
    if not all(is_valid_name(tag, 256) for tag in tags):
        with pytest.raises(InvalidEvent) as info:
            await store.append(stream, [NewEvent("T", b"{}", tags=tuple(tags))])
        assert (info.value.stream, info.value.index) == (stream, 0)
        assert await store.stream_version(stream) is None
        return
    written = await store.append(stream, [NewEvent("T", b"{}", b'{"k": "v"}', tags=tuple(tags))])
    [back] = await collect(store.read_stream(stream))
    assert (back.tags, back.metadata) == (tuple(dict.fromkeys(tags)), b'{"k": "v"}')
    found = await collect(store.read_query(Query([QueryItem(tags=(tags[-1],))]), after=written.position - 1))
    assert [e.id for e in found] == [back.id]
