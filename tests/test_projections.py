"""Projections on every store: catch-up then live, batching, filters, failures (stop, park, replay),
rebuild and status. Exactly-once read models are in ``test_projections_exactly_once.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from epoch.codec import Codec
from epoch.errors import ConfigurationError
from epoch.examples.users import AddUser, UpdateUser, UserService, codec
from epoch.examples.users.projections import UserDirectory, UserNamesInMemory
from epoch.projections import ProjectionFailed, ProjectionRunner, Retry
from epoch.records import EventEnvelope, NewEvent
from epoch.stores import EventStore, open_store
from epoch.testing import collect

FAST = Retry(retries=1, backoff=0.001)


class Recorder:
    """Remembers what it saw; fails on the names in ``poison`` (policy set per test)."""

    categories = "users"

    def __init__(self, name: str = "recorder", policy: str = "stop", poison: Sequence[str] = ()) -> None:
        self.name = name
        self.policy = policy
        self.poison = set(poison)
        self.seen: list[tuple[str, int]] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if getattr(envelope.data, "name", None) in self.poison:
            raise RuntimeError(f"poisoned {envelope.data.name}")
        self.seen.append((envelope.stream, envelope.version))

    async def reset(self) -> None:
        self.seen.clear()


async def add_users(store: EventStore, *names: str, directory: str = "main") -> None:
    service = UserService(store, directory)
    for name in names:
        await service.add_user(AddUser(name))


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_catch_up_then_live_then_resume(store: EventStore) -> None:
    await add_users(store, "ada", "bob")
    names = UserNamesInMemory()
    checkpoints = None
    async with ProjectionRunner(store, codec, [names]) as runner:
        checkpoints = runner.checkpoints
        runner.start()
        await eventually(lambda: len(names.names) == 2)
        await add_users(store, "cy", directory="other")
        await eventually(lambda: sorted(names.names.values()) == ["ada", "bob", "cy"])
    head = await store.head_position()
    assert await checkpoints.load("user-names") == head

    # A new runner resumes from the saved checkpoint: it sees only what came after.
    later = Recorder("user-names")
    await add_users(store, "dee")
    await ProjectionRunner(store, codec, [later], checkpoints=checkpoints).run_until_idle()
    assert later.seen == [("users-main", 2)]


async def test_checkpoints_default_to_the_store_database(store_url: str, tmp_path: Path) -> None:
    async with open_store(store_url) as store:
        await add_users(store, "ada")
        await ProjectionRunner(store, codec, [Recorder()]).run_until_idle()
        recorder = Recorder()
        await ProjectionRunner(store, codec, [recorder]).run_until_idle()
        # SQL stores: in the database; the memory store: in memory, with the store. Nothing is redone.
        assert recorder.seen == []
    if store_url == "memory://":  # a new memory store is a new, empty store: its checkpoints too
        async with open_store(store_url) as other:
            await add_users(other, "ada")
            fresh = Recorder()
            await ProjectionRunner(other, codec, [fresh]).run_until_idle()
            assert fresh.seen == [("users-main", 0)]


async def test_batches_and_filters_skip_before_decoding(store: EventStore) -> None:
    await add_users(store, *[f"user{i}" for i in range(7)])
    await store.append("users-junk", [NewEvent("NotACodecType", b"not json")])
    await store.append("orders-1", [NewEvent("OrderPlaced", b"{}")])

    class Batches:
        name = "batches"
        event_types = ("UserAdded",)  # the junk event would fail to decode: it must be skipped first

        def __init__(self) -> None:
            self.sizes: list[int] = []

        async def handle_batch(self, envelopes: Sequence[EventEnvelope[Any]]) -> None:
            self.sizes.append(len(envelopes))

    batches = Batches()
    runner = ProjectionRunner(store, codec, [batches], batch_size=3)
    await runner.run_until_idle()
    assert sum(batches.sizes) == 7
    assert max(batches.sizes) <= 3
    assert await runner.checkpoints.load("batches") == await store.head_position()


async def test_stop_policy_stops_at_the_failing_event(store: EventStore) -> None:
    await add_users(store, "ada", "bad", "cy")
    recorder = Recorder(poison=["bad"])
    healthy = Recorder("healthy")
    runner = ProjectionRunner(store, codec, [recorder, healthy], retry=FAST, batch_size=10)
    with pytest.raises(ProjectionFailed) as caught:
        await runner.run_until_idle()
    assert caught.value.stream == "users-main" and caught.value.version == 1
    assert recorder.seen[-1] == ("users-main", 0)
    assert len(healthy.seen) == 3  # a stopped projection does not hold the others back
    [status] = [s for s in await runner.status() if s.name == "recorder"]
    assert status.failing and "poisoned bad" in (status.error or "")
    assert status.lag_events == 2

    # Fixed: a new run goes on from the failing event and clears the failure.
    recorder.poison.clear()
    await ProjectionRunner(store, codec, [recorder], checkpoints=runner.checkpoints).run_until_idle()
    assert recorder.seen[-2:] == [("users-main", 1), ("users-main", 2)]
    assert not next(s for s in await runner.status() if s.name == "recorder").failing


async def test_park_policy_parks_and_replays(store: EventStore) -> None:
    await add_users(store, "ada", "bad", "cy")
    recorder = Recorder(policy="park", poison=["bad"])
    runner = ProjectionRunner(store, codec, [recorder], retry=FAST)
    await runner.run_until_idle()
    assert ("users-main", 2) in recorder.seen and ("users-main", 1) not in recorder.seen
    [parked] = await runner.parking.list("recorder")
    assert (parked.event.stream, parked.event.version) == ("users-main", 1)
    assert "poisoned bad" in parked.error
    assert (await runner.status())[0].parked == 1

    assert await runner.replay_parked("recorder") == 0  # still failing: stays parked
    assert len(await runner.parking.list("recorder")) == 1
    recorder.poison.clear()
    assert await runner.replay_parked("recorder") == 1
    assert recorder.seen[-1] == ("users-main", 1)
    assert await runner.parking.list("recorder") == []


async def test_rebuild_resets_and_replays(store: EventStore) -> None:
    await add_users(store, "ada", "bob")
    await UserService(store).update_user(UpdateUser(user_id=(await _first_id(store)), name="ada2"))
    names = UserNamesInMemory()
    runner = ProjectionRunner(store, codec, [names])
    await runner.run_until_idle()
    before = dict(names.names)
    names.names["ghost"] = "not in the log"
    progress: list[int] = []
    await runner.rebuild("user-names", on_progress=progress.append)
    assert names.names == before
    assert sum(progress) == 3

    class NoReset:
        name = "no-reset"

        async def handle(self, envelope: EventEnvelope[Any]) -> None: ...

    with pytest.raises(ConfigurationError):
        await ProjectionRunner(store, codec, [NoReset()]).rebuild("no-reset")


async def _first_id(store: EventStore) -> str:
    async for recorded in store.read_stream("users-main"):
        return str(codec.decode_data(recorded).user_id)
    raise AssertionError("no users")


async def test_status_reports_lag_and_throughput(store: EventStore) -> None:
    await add_users(store, "ada", "bob", "cy")
    recorder = Recorder()
    runner = ProjectionRunner(store, codec, [recorder])
    [fresh] = await runner.status()
    assert (fresh.checkpoint, fresh.lag_events, fresh.head) == (0, 3, await store.head_position())
    assert fresh.lag_seconds >= 0 and not fresh.failing
    await runner.run_until_idle()
    [done] = await runner.status()
    assert (done.checkpoint, done.lag_events, done.lag_seconds) == (done.head, 0, 0.0)
    assert done.events_per_second > 0
    assert done.to_dict()["failing"] is False


def test_configuration_errors() -> None:
    from epoch.stores.memory import MemoryEventStore

    store = MemoryEventStore()
    with pytest.raises(ConfigurationError, match="two projections"):
        ProjectionRunner(store, codec, [Recorder(), Recorder()])
    with pytest.raises(ConfigurationError, match="policy"):
        ProjectionRunner(store, codec, [Recorder(policy="ignore")])
    with pytest.raises(ConfigurationError, match="SQLite or PostgreSQL"):
        ProjectionRunner(store, codec, [UserDirectory()])


@dataclass
class Deposited:
    amount: int
    event_version: ClassVar[int] = 3


@dataclass
class Withdrawn:
    amount: int
    event_version: ClassVar[int] = 2


RENAMING = Codec(
    [Deposited, Withdrawn],
    upcasters={
        ("Credited", 1): lambda d: ("Deposited", d),  # a rename (to Deposited v2)
        ("Deposited", 2): lambda d: d,  # a version-only upcaster (v2 -> v3)
        ("Paid", 1): lambda d: ("Credited", d),  # a chain: Paid v1 -> Credited v2 -> Deposited v3
        ("Credited", 2): lambda d: ("Deposited", {"amount": d["amount"]}),
        ("Debited", 1): lambda d: ("Withdrawn", d),  # a rename to a type the filter does not want
    },
)


class Amounts:
    def __init__(self, name: str, *types: str) -> None:
        self.name = name
        self.event_types = types
        self.seen: list[tuple[str, int]] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen.append((envelope.type, envelope.data.amount))


async def test_event_types_match_the_type_as_decoded_after_upcasting(store: EventStore) -> None:
    def old(type_name: str, amount: int, version: int) -> NewEvent:
        return NewEvent(type_name, b'{"amount": %d}' % amount, b'{"$event_version": %d}' % version)

    await store.append("acct-1", [old("Credited", 1, 1), old("Deposited", 2, 2), old("Paid", 4, 1)])
    await store.append("acct-1", [RENAMING.encode(Deposited(8)), old("Debited", 16, 1)])
    await store.append("acct-1", [NewEvent("NotACodecType", b"not json")])  # still skipped before decoding
    deposits, withdrawals, old_name = (
        Amounts("deposits", "Deposited"),
        Amounts("withdrawals", "Withdrawn"),
        Amounts("old", "Credited"),
    )
    runner = ProjectionRunner(store, RENAMING, [deposits, withdrawals, old_name])
    assert [(s.name, s.lag_events) for s in await runner.status()] == [("deposits", 4), ("withdrawals", 1), ("old", 0)]
    await runner.run_until_idle()
    assert deposits.seen == [("Deposited", 1), ("Deposited", 2), ("Deposited", 4), ("Deposited", 8)]
    assert withdrawals.seen == [("Withdrawn", 16)]
    assert old_name.seen == []  # "Credited" is a stored name only: every such event decodes as Deposited
    head = await store.head_position()
    assert [(s.name, s.checkpoint, s.lag_events) for s in await runner.status()] == [
        ("deposits", head, 0),
        ("withdrawals", head, 0),
        ("old", head, 0),
    ]


async def test_a_projection_of_a_thousand_categories(store: EventStore) -> None:
    # More names than SQLite takes in one compound SELECT: answered as on every store, not retried forever.
    await add_users(store, "ada", "bob")
    [first, *_] = await collect(store.read_all())
    copied = await store.append("c998-1", [NewEvent(first.type, first.data, first.metadata)])
    await store.append("c999-1", [NewEvent("NotACodecType", b"not json")])  # not among the names
    recorder = Recorder("many")
    recorder.categories = ["users", *(f"c{i}" for i in range(999))]  # type: ignore[assignment]
    runner = ProjectionRunner(store, codec, [recorder], retry=FAST)
    [before] = await runner.status()
    assert before.lag_events == 3
    await asyncio.wait_for(runner.run_until_idle(), 30)
    assert recorder.seen == [("users-main", 0), ("users-main", 1), ("c998-1", 0)]
    [after] = await runner.status()
    assert (after.checkpoint, after.lag_events, after.error) == (copied.position, 0, None)


class CancelledInside(Recorder):
    """On a poisoned name, awaits an inner task that was cancelled (not the runner): ``CancelledError``."""

    def __init__(self, name: str = "recorder", policy: str = "stop", poison: Sequence[str] = ()) -> None:
        super().__init__(name, policy, poison)
        self.failed = 0

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if getattr(envelope.data, "name", None) in self.poison:
            self.failed += 1
            inner = asyncio.ensure_future(asyncio.sleep(10))
            inner.cancel()
            await inner
        self.seen.append((envelope.stream, envelope.version))


async def test_a_cancelled_error_from_a_handler_is_a_failure(store: EventStore) -> None:
    await add_users(store, "ada", "bad", "cy")
    stopping, parking = CancelledInside("stopping", poison=["bad"]), CancelledInside("parking", "park", ["bad"])
    healthy = Recorder("healthy")
    runner = ProjectionRunner(store, codec, [stopping, parking, healthy], retry=FAST)
    with pytest.raises(ProjectionFailed) as caught:
        await runner.run_until_idle()
    positions = [r.position async for r in store.read_all()]
    message = f"projection 'stopping' stopped at users-main version 1 (position {positions[1]}): CancelledError: "
    assert str(caught.value) == message
    assert list(runner.failures) == ["stopping"]
    assert stopping.failed == 4  # retried like any failure: the batch twice, then the event twice
    assert stopping.seen[-1] == ("users-main", 0)
    assert parking.seen[-1] == ("users-main", 2)
    [parked] = await runner.parking.list("parking")
    assert (parked.event.version, parked.error) == (1, "CancelledError: ")
    assert await runner.replay_parked("parking") == 0  # fails again, stays parked; the caller is not cancelled
    assert [(p.event.version, p.error) for p in await runner.parking.list("parking")] == [(1, "CancelledError: ")]
    assert len(healthy.seen) == 3
    status = {s.name: (s.checkpoint, s.failing, s.error) for s in await runner.status()}
    assert status["stopping"] == (positions[0], True, "CancelledError: ")


async def test_a_cancelled_error_from_a_handler_stops_it_in_a_live_run(store: EventStore) -> None:
    bad, healthy = CancelledInside(poison=["bad"]), Recorder("healthy")
    async with ProjectionRunner(store, codec, [bad, healthy], retry=FAST) as runner:
        runner.start()
        await add_users(store, "ada", "bad", "cy")
        await eventually(lambda: "recorder" in runner.failures and len(healthy.seen) == 3)
        assert runner.failures["recorder"].error == "CancelledError: "
        assert bad.seen[-1] == ("users-main", 0)


async def test_cancelling_the_runner_still_cancels_a_waiting_handler(store: EventStore) -> None:
    entered = asyncio.Event()

    class Waits(Recorder):
        async def handle(self, envelope: EventEnvelope[Any]) -> None:
            self.seen.append((envelope.stream, envelope.version))
            entered.set()
            await asyncio.Event().wait()

    waits = Waits()
    await add_users(store, "ada")
    runner = ProjectionRunner(store, codec, [waits], retry=FAST)
    task = asyncio.ensure_future(runner.run_until_idle())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    await asyncio.wait_for(asyncio.wait({task}), 5)
    assert task.cancelled()
    assert waits.seen == [("users-main", 0)]  # not retried: the runner's own cancellation is no failure
    assert runner.failures == {}
    assert await runner.checkpoints.load("recorder") == 0


async def test_a_stray_cancelled_error_outside_a_handler_is_raised_not_swallowed(store: EventStore) -> None:
    from epoch.projections import MemoryCheckpointStore

    class Cancels(MemoryCheckpointStore):
        async def load(self, name: str) -> int:
            if name == "recorder":
                raise asyncio.CancelledError
            return await super().load(name)

    await add_users(store, "ada")
    healthy = Recorder("healthy")
    runner = ProjectionRunner(store, codec, [Recorder(), healthy], checkpoints=Cancels())
    with pytest.raises(RuntimeError) as caught:
        await runner.run_until_idle()
    assert str(caught.value) == "projection 'recorder' ended with a CancelledError, but the runner was not cancelled"


class Raises(Recorder):
    """Raises ``error`` on the poisoned names."""

    def __init__(self, error: BaseException, name: str = "recorder", policy: str = "stop") -> None:
        super().__init__(name, policy, ["bad"])
        self.error = error

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        if getattr(envelope.data, "name", None) in self.poison:
            raise self.error
        self.seen.append((envelope.stream, envelope.version))


async def test_an_error_quoting_a_lone_surrogate_is_stored_escaped(store: EventStore) -> None:
    await add_users(store, "ada", "bad", "cy")
    error = ValueError("bad name '\ud800'")
    stopping, parking = Raises(error, "stopping"), Raises(error, "parking", "park")
    runner = ProjectionRunner(store, codec, [stopping, parking], retry=FAST)
    with pytest.raises(ProjectionFailed) as caught:
        await runner.run_until_idle()
    assert caught.value.error == "ValueError: bad name '\\ud800'"
    [parked] = await runner.parking.list("parking")
    assert (parked.event.version, parked.error) == (1, "ValueError: bad name '\\ud800'")
    assert parking.seen[-1] == ("users-main", 2)
    status = {s.name: (s.failing, s.error) for s in await runner.status()}
    assert status == {"stopping": (True, "ValueError: bad name '\\ud800'"), "parking": (False, None)}


async def test_a_failure_to_record_failing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from epoch.projections import MemoryCheckpointStore
    from epoch.stores.memory import MemoryEventStore

    class Refuses(MemoryCheckpointStore):
        async def mark_failing(self, name: str, error: str | None) -> None:
            raise RuntimeError("disk full")

    store = MemoryEventStore()
    await add_users(store, "bad")
    runner = ProjectionRunner(store, codec, [Raises(ValueError("no"))], Refuses(), retry=Retry(retries=0))
    with pytest.raises(ProjectionFailed) as caught:
        await runner.run_until_idle()
    assert caught.value.error == "ValueError: no"
    recorded = [(r.levelname, r.getMessage()) for r in caplog.records if "could not" in r.getMessage()]
    assert recorded == [
        ("WARNING", "projection 'recorder': could not record it as failing: RuntimeError('disk full')"),
        ("ERROR", "projection 'recorder': could not record it as failing: RuntimeError('disk full')"),
    ]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_an_unprintable_error_stops_or_parks_like_any_other(store: EventStore) -> None:
    await add_users(store, "ada", "bad", "cy")
    stopping, parking = Raises(Unprintable(), "stopping"), Raises(Unprintable(), "parking", "park")
    runner = ProjectionRunner(store, codec, [stopping, parking], retry=FAST)
    with pytest.raises(ProjectionFailed) as caught:
        await runner.run_until_idle()
    assert caught.value.error == "Unprintable: <unprintable>"
    [parked] = await runner.parking.list("parking")
    assert (parked.event.version, parked.error) == (1, "Unprintable: <unprintable>")
    assert parking.seen[-1] == ("users-main", 2)


async def test_rebuild_takes_a_plain_reset_too(store: EventStore) -> None:
    class PlainReset(Recorder):
        def reset(self) -> None:  # type: ignore[override]
            self.seen.clear()

    await add_users(store, "ada", "bob")
    plain = PlainReset()
    runner = ProjectionRunner(store, codec, [plain])
    await runner.run_until_idle()
    plain.seen.append(("ghost", 9))
    await runner.rebuild("recorder")
    assert plain.seen == [("users-main", 0), ("users-main", 1)]


async def test_an_unknown_projection_name_is_a_configuration_error(store: EventStore) -> None:
    runner = ProjectionRunner(store, codec, [Recorder()])
    for call in (runner.replay_parked("nope"), runner.rebuild("nope")):
        with pytest.raises(ConfigurationError) as caught:
            await call
        assert str(caught.value) == "no projection named 'nope' (known: recorder)"
    with pytest.raises(ConfigurationError) as caught:
        runner.projection("nope")
    assert str(caught.value) == "no projection named 'nope' (known: recorder)"
