"""The seams the projections ask for, each in one function: the store's database (``sql_store``), checkpoints
and parking that join its transactions (``transactional_checkpoints``/``transactional_parking``), the
delivery of each projection kind (``delivery_for``), and the worker's own restart flag (``mark_stale``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from epoch.errors import ConfigurationError
from epoch.examples.users import AddUser, UserService, codec
from epoch.examples.users.projections import UserDirectory, UserNamesInMemory
from epoch.projections import (
    MemoryCheckpointStore,
    MemoryParkingLot,
    ProjectionRunner,
    Retry,
    SQLCheckpointStore,
    SQLParkingLot,
    Transaction,
    TransactionalCheckpointStore,
    TransactionalParkingLot,
    default_checkpoints,
    default_parking,
)
from epoch.projections._delivery import BatchDelivery, EventDelivery, TransactionalDelivery, delivery_for
from epoch.projections._worker import Worker
from epoch.projections.checkpoints import transactional_checkpoints
from epoch.projections.parking import transactional_parking
from epoch.projections.projection import kind_of, settings_of
from epoch.records import EventEnvelope
from epoch.stores import EventStore, open_store, sql_store
from epoch.stores.memory import MemoryEventStore


class Batches:
    name = "batches"
    categories = "users"

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []

    async def handle_batch(self, envelopes: Sequence[EventEnvelope[Any]]) -> None:
        self.calls.append([(e.stream, e.version) for e in envelopes])


async def add_users(store: EventStore, directory: str, count: int) -> None:
    service = UserService(store, directory)
    for i in range(count):
        await service.add_user(AddUser(f"user{i}"))


async def test_each_store_declares_what_it_has(store: EventStore, store_url: str) -> None:
    checkpoints, parking = default_checkpoints(store), default_parking(store)
    database = sql_store(store)
    found = (
        None if database is None else (database.dialect, database.conninfo is None),
        type(checkpoints).__name__,
        type(parking).__name__,
        transactional_checkpoints(checkpoints) is not None,
        transactional_parking(parking) is not None,
    )
    scheme = store_url.split("://", 1)[0]
    assert (
        found
        == {
            "memory": (None, "MemoryCheckpointStore", "MemoryParkingLot", False, False),
            "sqlite": (("sqlite", True), "SQLCheckpointStore", "SQLParkingLot", True, True),
            "postgresql": (("postgresql", False), "SQLCheckpointStore", "SQLParkingLot", True, True),
        }[scheme]
    )


@pytest.mark.postgres
async def test_postgres_declares_where_its_connections_open(pg_dsn: str) -> None:
    async with open_store(pg_dsn) as store:
        database = sql_store(store)
        assert database is not None
        assert database.conninfo == pg_dsn


def test_memory_checkpoints_and_parking_cannot_join_a_transaction() -> None:
    assert transactional_checkpoints(MemoryCheckpointStore()) is None
    assert transactional_parking(MemoryParkingLot()) is None
    assert transactional_checkpoints(object()) is None
    assert transactional_parking(object()) is None


def test_exactly_once_needs_the_stores_database() -> None:
    with pytest.raises(ConfigurationError) as info:
        ProjectionRunner(MemoryEventStore(), codec, [UserDirectory()])
    assert str(info.value) == (
        "projection 'user-directory' writes in the store's transaction (handle_in_transaction): "
        "it needs a SQLite or PostgreSQL store"
    )


async def test_exactly_once_refuses_checkpoints_or_parking_outside_the_database(sqlite_url: str) -> None:
    message = (
        "projection 'user-directory' is exactly-once: its checkpoints and parked events must live in the "
        "store's database (use the default checkpoints and parking)"
    )
    async with open_store(sqlite_url) as store:
        with pytest.raises(ConfigurationError) as info:
            ProjectionRunner(store, codec, [UserDirectory()], MemoryCheckpointStore())
        assert str(info.value) == message
        with pytest.raises(ConfigurationError) as info:
            ProjectionRunner(store, codec, [UserDirectory()], parking=MemoryParkingLot())
        assert str(info.value) == message


class CountingCheckpoints(SQLCheckpointStore):
    """Declares the capability by inheritance and records what was saved in a transaction."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.saved_in: list[tuple[str, int, int]] = []

    async def advance_in(self, tx: Transaction, name: str, since: int, position: int, events_per_second: float) -> bool:
        self.saved_in.append((name, since, position))  # from where the runner stood, compared and set
        return await super().advance_in(tx, name, since, position, events_per_second)


async def test_exactly_once_saves_each_batch_in_its_transaction(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        await add_users(store, "eu", 3)
        positions = [r.position async for r in store.read_all()]
        database = sql_store(store)
        assert database is not None
        checkpoints = CountingCheckpoints(database)
        runner = ProjectionRunner(store, codec, [UserDirectory()], checkpoints, batch_size=2)
        await runner.run_until_idle()
        assert checkpoints.saved_in == [
            ("user-directory", 0, positions[1]),
            ("user-directory", positions[1], positions[2]),
        ]
        assert await checkpoints.load("user-directory") == positions[2]


async def test_one_delivery_per_kind(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        database = sql_store(store)
        assert database is not None
        checkpoints, parking = SQLCheckpointStore(database), SQLParkingLot(database)
        assert isinstance(checkpoints, TransactionalCheckpointStore)
        assert isinstance(parking, TransactionalParkingLot)
        found = []
        for projection in (UserNamesInMemory(), Batches(), UserDirectory()):
            settings = settings_of(projection)
            delivery = delivery_for(projection, settings.kind, settings.name, checkpoints, parking, database)
            found.append((settings.kind, type(delivery)))
        assert found == [("event", EventDelivery), ("batch", BatchDelivery), ("transactional", TransactionalDelivery)]


def test_kind_of_needs_no_name() -> None:
    class Nameless:
        async def handle(self, envelope: Any) -> None: ...

    assert [kind_of(Nameless()), kind_of(Batches()), kind_of(UserDirectory()), kind_of(object())] == [
        "event",
        "batch",
        "transactional",
        None,
    ]


async def test_a_batch_projection_gets_the_runners_batches(store: EventStore) -> None:
    await add_users(store, "eu", 5)
    projection = Batches()
    await ProjectionRunner(store, codec, [projection], batch_size=2).run_until_idle()
    assert projection.calls == [
        [("users-eu", 0), ("users-eu", 1)],
        [("users-eu", 2), ("users-eu", 3)],
        [("users-eu", 4)],
    ]


async def test_a_stale_worker_reloads_its_checkpoint(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        await add_users(store, "eu", 2)
        head = await store.head_position()
        checkpoints, parking = default_checkpoints(store), default_parking(store)
        projection = UserNamesInMemory()
        worker = Worker(
            projection, settings_of(projection), store, codec, checkpoints, parking, sql_store(store), Retry(), 16
        )
        await worker.start()
        assert worker.position == 0
        await checkpoints.save("user-names", head)
        await worker.start()
        assert worker.position == 0  # started: the checkpoint is not read again
        worker.mark_stale()
        await worker.start()
        assert worker.position == head
