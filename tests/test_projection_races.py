"""Exactly-once projections where operators and outages race them (SQLite, PostgreSQL): two replays of the
same parked events, a rebuild whose reset fails, and a store that stops answering for longer than the
retry budget. Found by an adversarial round; each test failed before its fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from epoch.errors import StoreUnavailable
from epoch.examples.users import codec
from epoch.examples.users.projections import UserDirectory
from epoch.projections import ProjectionRunner, Retry, Transaction
from epoch.records import EventEnvelope
from epoch.stores import EventStore, open_store
from tests.test_projections_exactly_once import rows, write_users


@pytest.fixture
async def store(sql_store_url: str) -> AsyncIterator[EventStore]:
    async with open_store(sql_store_url) as opened:
        yield opened


class Directory(UserDirectory):
    """The Users read model, failing for the users named in ``refused`` (parked under policy park)."""

    name = "directory"
    policy = "park"

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused

    async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
        if getattr(envelope.data, "name", None) in self.refused:
            raise RuntimeError(f"refused {envelope.data.name}")
        await super().handle_in_transaction(envelope, tx)
        await asyncio.sleep(0)  # a real handler awaits: the other replay runs meanwhile


async def test_two_replays_of_the_same_parked_events_apply_each_once(store: EventStore, sql_store_url: str) -> None:
    await write_users(store, 12, 0)
    refused = {f"user{i}" for i in range(0, 12, 2)}
    runner = ProjectionRunner(store, codec, [Directory(refused)], retry=Retry(0, 0.001))
    await runner.run_until_idle()
    assert len(await runner.parking.list("directory")) == 6
    async with open_store(sql_store_url) as other:
        first = ProjectionRunner(store, codec, [Directory(set())])
        second = ProjectionRunner(other, codec, [Directory(set())])
        counts = await asyncio.gather(first.replay_parked("directory"), second.replay_parked("directory"))
    assert sum(counts) == 6  # each parked event applied by exactly one of them
    assert sorted(r[2] for r in await rows(runner)) == sorted(f"user{i}" for i in range(12))
    assert await runner.parking.list("directory") == []


async def test_a_rebuild_whose_reset_fails_keeps_the_parked_events(store: EventStore) -> None:
    class FailingReset(Directory):
        async def reset(self, tx: Transaction) -> None:
            raise RuntimeError("the reset failed (a lock timeout, say)")

    await write_users(store, 6, 0)
    runner = ProjectionRunner(store, codec, [FailingReset({"user1", "user4"})], retry=Retry(0, 0.001))
    await runner.run_until_idle()
    parked = [(p.event.id, p.error) for p in await runner.parking.list("directory")]
    assert [error for _, error in parked] == ["RuntimeError: refused user1", "RuntimeError: refused user4"]
    before = (await runner.checkpoints.load("directory"), await rows(runner))
    with pytest.raises(RuntimeError, match="the reset failed"):
        await runner.rebuild("directory")
    assert [(p.event.id, p.error) for p in await runner.parking.list("directory")] == parked
    assert (await runner.checkpoints.load("directory"), await rows(runner)) == before


async def test_a_store_that_stops_answering_is_no_event_failure(store: EventStore) -> None:
    """The store fails every write for longer than the retry budget (4 attempts of 2 events each here):
    before, the events were given up on (stopped, or parked under ``park``); now a live runner waits
    ``reconnect_delay`` and goes on from its checkpoint, and every event lands once."""

    class Outage(Directory):
        policy = "stop"

        def __init__(self) -> None:
            super().__init__(set())
            self.failures = 12

        async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
            if self.failures > 0:
                self.failures -= 1
                raise StoreUnavailable("the database is locked")
            await super().handle_in_transaction(envelope, tx)

    await write_users(store, 5, 0)
    outage = Outage()
    runner = ProjectionRunner(store, codec, [outage], retry=Retry(3, 0.001), reconnect_delay=0.01)
    await runner.checkpoints.load("directory")  # the runner's tables, before it starts
    async with runner:
        task = runner.start()
        for _ in range(500):
            if outage.failures == 0 and await runner.checkpoints.load("directory") == await store.head_position():
                break
            assert not task.done(), task
            await asyncio.sleep(0.01)
        [status] = await runner.status()
    assert outage.failures == 0 and runner.failures == {}
    assert sorted(r[2] for r in await rows(runner)) == [f"user{i}" for i in range(5)]
    assert (status.lag_events, status.failing, status.parked) == (0, False, 0)


class Applications:
    """An exactly-once read model that counts how many times each event was applied."""

    name = "applications"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def setup(self, tx: Transaction) -> None:
        await tx.execute("CREATE TABLE IF NOT EXISTS applications (position BIGINT PRIMARY KEY, n INTEGER NOT NULL)")

    async def reset(self, tx: Transaction) -> None:
        await tx.execute("DELETE FROM applications")

    async def handle_in_transaction(self, envelope: EventEnvelope[Any], tx: Transaction) -> None:
        await tx.execute(
            "INSERT INTO applications (position, n) VALUES (?, 1) ON CONFLICT (position) DO UPDATE SET n = applications.n + 1",
            [envelope.position],
        )
        await asyncio.sleep(self.delay)  # a real handler awaits: the other runner's batch runs meanwhile


async def test_two_runners_of_one_exactly_once_projection_apply_each_event_once(
    store: EventStore, sql_store_url: str
) -> None:
    """Two runners of one projection on two store objects (two replicas of a service, say), catching up
    and then following live events at once: each event is applied once. The checkpoint moves by
    compare-and-set in the applying transaction; the runner that finds it moved rolls back and goes on
    from there."""
    await write_users(store, 40, 40)
    async with open_store(sql_store_url) as other:
        runners = [ProjectionRunner(s, codec, [Applications(0.001)], batch_size=8) for s in (store, other)]
        assert runners[0].database is not None
        async with runners[0].database.transaction() as tx:  # PostgreSQL races two CREATE TABLE IF NOT EXISTS
            await Applications().setup(tx)
        async with runners[0], runners[1]:
            tasks = [runner.start() for runner in runners]
            await write_users(store, 10, 0, seed=3, prefix="live")
            head = await store.head_position()
            for _ in range(1000):
                if await runners[0].checkpoints.load("applications") == head:
                    break
                assert not any(task.done() for task in tasks)
                await asyncio.sleep(0.01)
        async with runners[0].database.transaction() as tx:
            counts = [tuple(r) for r in await tx.execute("SELECT n, count(*) FROM applications GROUP BY n")]
    assert counts == [(1, len([e async for e in store.read_all()]))]
