"""Process managers (the Users name registry) and the read-side testing kit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from epoch import View
from epoch.examples.users import AddUser, UpdateUser, UserAdded, UserService, UserUpdated, codec
from epoch.examples.users.projections import UserDirectory, UserNamesInMemory
from epoch.examples.users.registry import (
    NameTaken,
    RegisteredUsers,
    ReserveName,
    name_claims,
    name_claims_runner,
    registry_handler,
)
from epoch.projections import MemoryCheckpointStore, Transaction
from epoch.projections.sagas import SagaRunner, command_id_for
from epoch.stores import EventStore
from epoch.testing.projections import ProjectionSpec, SagaSpec, ViewSpec


async def test_two_concurrent_registrations_of_one_name_cannot_both_succeed(store: EventStore) -> None:
    users = RegisteredUsers(store)
    outcomes = await asyncio.gather(
        users.add_user("eu", "ada"), users.add_user("us", "ada"), users.add_user("apac", "bob"), return_exceptions=True
    )
    assert sum(isinstance(o, NameTaken) for o in outcomes[:2]) == 1
    assert not isinstance(outcomes[2], BaseException)
    directories = [len(await UserService(store, d).users()) for d in ("eu", "us")]
    assert sorted(directories) == [0, 1]


async def test_saga_claims_names_with_derived_ids_and_parks_clashes(store: EventStore) -> None:
    # Bypass the registry: two directories both accept "ada" (and the service path reserves "cy").
    await UserService(store, "eu").add_user(AddUser("ada"))
    await UserService(store, "us").add_user(AddUser("ada"))
    await RegisteredUsers(store).add_user("eu", "cy")
    [bob_id] = [
        (await UserService(store, "us").add_user(AddUser("bob"))).events[0].data.user_id,
    ]
    await UserService(store, "us").update_user(UpdateUser(bob_id, "bobby"))

    saga = name_claims_runner(store)
    await saga.run_until_idle()

    [clash] = await saga.runner.parking.list(saga.name)
    assert "NameTaken" in clash.error and clash.event.stream == "users-us"
    status = await saga.status()
    assert status.parked == 1 and status.lag_events == 0

    # The reservation carries the triggering event's ids.
    trigger = clash_free = None
    async for recorded in store.read_all():
        if recorded.stream == "users-eu" and recorded.type == "UserAdded" and trigger is None:
            trigger = recorded
        if recorded.stream == "usernames-ada":
            clash_free = recorded
    assert trigger is not None and clash_free is not None
    metadata = json.loads(clash_free.metadata)
    assert metadata["$causation_id"] == str(trigger.id)
    assert metadata["$command_id"] == str(command_id_for(trigger.id, saga.name, 0))
    assert metadata["$correlation_id"] == json.loads(trigger.metadata)["$correlation_id"]

    # Redelivery (a fresh checkpoint: every event again) issues no command twice.
    head = await store.head_position()
    names = registry_handler(store)
    again = SagaRunner(
        store,
        codec,
        name_claims,
        lambda command: (names, command.name),
        name=saga.name,
        categories="users",
        policy="park",
        checkpoints=MemoryCheckpointStore(),
    )
    await again.run_until_idle()
    assert await store.head_position() == head
    assert {s async for s in _streams(store, "usernames")} == {
        "usernames-ada",
        "usernames-bob",
        "usernames-bobby",
        "usernames-cy",
    }


async def _streams(store: EventStore, category: str) -> AsyncIterator[str]:
    async for recorded in store.read_all(categories=category):
        yield recorded.stream


def test_saga_spec() -> None:
    SagaSpec(name_claims).given(UserAdded("u1", "ada")).then([ReserveName("ada", "u1")])
    SagaSpec(name_claims).given(UserUpdated("u1", None)).then_nothing()
    with pytest.raises(AssertionError) as info:
        SagaSpec(name_claims).given(UserAdded("u1", "ada")).then_nothing()
    assert str(info.value) == "expected commands\n  []\nbut the saga issued\n  [ReserveName(name='ada', owner='u1')]"


def test_view_spec() -> None:
    def evolve(names: dict[str, str], event: Any) -> dict[str, str]:
        return {**names, event.user_id: event.name} if event.name is not None else names

    view: View[dict[str, str], Any] = View(evolve, dict)
    ViewSpec(view).given([UserAdded("1", "ada"), UserUpdated("1", "ada2")]).then({"1": "ada2"})
    with pytest.raises(AssertionError):
        ViewSpec(view).given([UserAdded("1", "ada")]).then({})


async def test_projection_spec_checks_redelivery() -> None:
    events = [UserAdded("1", "ada"), UserUpdated("1", "ada2")]
    await ProjectionSpec(UserNamesInMemory()).given(events).then({"1": "ada2"}, state=lambda p: p.names)

    class Counter:  # not idempotent: counts redelivered events twice
        name = "counter"

        def __init__(self) -> None:
            self.count = 0

        async def handle(self, envelope: Any) -> None:
            self.count += 1

    with pytest.raises(AssertionError) as info:
        await ProjectionSpec(Counter()).given(events).then(2, state=lambda p: p.count)
    assert str(info.value) == "after the events were delivered again: expected\n  2\nbut the projection holds\n  4"

    async def rows(_: Any, tx: Transaction) -> list[tuple[Any, ...]]:
        return await UserDirectory.rows(tx)

    await ProjectionSpec(UserDirectory()).given(events, stream="users-eu").then([("1", "eu", "ada2", 1)], state=rows)


async def test_projection_spec_hands_a_batch_projection_the_whole_batch_each_time() -> None:
    class Batches:  # no name: a spec needs none
        def __init__(self) -> None:
            self.calls: list[list[tuple[str, int, int]]] = []

        async def handle_batch(self, envelopes: Any) -> None:
            self.calls.append([(e.stream, e.version, e.position) for e in envelopes])

    events = [UserAdded("1", "ada"), UserUpdated("1", "ada2")]
    whole = (("users-eu", 0, 1), ("users-eu", 1, 2))
    projection = Batches()
    await (
        ProjectionSpec(projection)
        .given(events, stream="users-eu")
        .then({whole}, state=lambda p: {tuple(call) for call in p.calls})
    )
    assert projection.calls == [list(whole), list(whole)]
