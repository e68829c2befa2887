"""OpenTelemetry outside ``ProjectionRunner`` (issue 14): every batch a ``PartitionedRunner`` commits and
every delivery of a ``ProjectionSpec`` is a ``process`` span continuing the trace of the events' command,
and a partition's lag is its own series. PostgreSQL for scale-out, as in production."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from epoch import open_store
from epoch.examples.users import AddUser, UserAdded, UserService, codec
from epoch.projections.scaleout import PartitionedRunner, partition_of
from epoch.records import EventEnvelope
from epoch.testing import ProjectionSpec
from tests.test_telemetry import Names, Recorded, otel, parent_of, span_id, trace_id

__all__ = ["otel"]  # the fixture, used by name

PARTITIONS = 4


class UsersSeen(Names):
    categories = "users"


def directories_in_partitions() -> list[str]:
    """One directory per partition, in partition order (its stream ``users-{d}`` hashes there)."""
    found: dict[int, str] = {}
    for n in range(100):
        found.setdefault(partition_of(f"users-d{n}", PARTITIONS), f"d{n}")
    return [found[p] for p in range(PARTITIONS)]


@pytest.mark.postgres
@pytest.mark.timeout(60)
async def test_each_partition_batch_is_a_span_in_its_commands_trace(otel: Recorded, pg_dsn: str) -> None:
    directories = directories_in_partitions()[:2]
    async with open_store(pg_dsn) as store:
        for directory in directories:
            await UserService(store, directory).add_user(AddUser("ada"))
        projection = UsersSeen()
        async with PartitionedRunner(store, codec, projection, PARTITIONS, poll_interval=0.01) as runner:
            task = asyncio.create_task(runner.run())
            try:
                # Until both batches have committed and recorded their lag (handling an event comes
                # before its commit, and the lag after it).
                async with asyncio.timeout(30):
                    while len(otel.metrics().get("epoch.projection.lag", [])) < 2:
                        await asyncio.sleep(0.01)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        positions = [r.position async for r in store.read_all()]
    commands = {dict(s.attributes or {})["epoch.stream"]: s for s in otel.spans() if s.name == "execute users"}
    batches = sorted(
        (s for s in otel.spans() if s.name == "process names"),
        key=lambda s: str(dict(s.attributes or {})["epoch.partition"]),
    )
    assert [dict(b.attributes or {}) for b in batches] == [
        {
            "messaging.system": "epoch",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": "names",
            "messaging.batch.message_count": 1,
            "epoch.projection": "names",
            "epoch.partition": partition,
            "epoch.checkpoint": position,
        }
        for partition, position in enumerate(positions)
    ]
    for batch, directory in zip(batches, directories, strict=True):
        command = commands[f"users-{directory}"]
        assert (parent_of(batch), trace_id(batch)) == (span_id(command), trace_id(command))
    metrics = otel.metrics()
    labels = [{"epoch.projection": "names", "epoch.partition": p} for p in (0, 1)]
    assert sorted(metrics["epoch.projection.events"], key=str) == [(label, 1) for label in labels]
    # After its batch a partition lags by the events in the log after its checkpoint: partition 0 by the
    # other partition's one event (counted: PostgreSQL's positions are far apart), partition 1 by none.
    assert positions[1] - positions[0] > 1
    lags = [(labels[0], 1), (labels[1], 0)]
    assert sorted(metrics["epoch.projection.lag"], key=str) == lags


@pytest.mark.postgres
@pytest.mark.timeout(60)
async def test_a_lost_lease_ends_its_batch_span_with_the_error(otel: Recorded, pg_dsn: str) -> None:
    [directory] = directories_in_partitions()[:1]
    async with open_store(pg_dsn) as store:
        await UserService(store, directory).add_user(AddUser("ada"))
        projection = UsersSeen()
        async with PartitionedRunner(store, codec, projection, PARTITIONS, poll_interval=0.01) as runner:
            await runner._connect()
            await runner._rebalance()  # the only member: it holds every partition
            runner.generations[0] -= 1  # as if another runner had taken partition 0 since
            await runner._step()
            assert (projection.seen, sorted(runner.held)) == ([], [1, 2, 3])

    [batch] = [s for s in otel.spans() if s.name == "process names"]
    assert dict(batch.attributes or {})["epoch.partition"] == 0
    assert batch.status.description == "LeaseLost: partition 0 of 'names' has lease generation 1, not 0"
    assert [event.name for event in batch.events] == ["exception"]
    assert "epoch.projection.events" not in otel.metrics()


class Kept:
    """An idempotent projection (as ``ProjectionSpec`` requires): the envelopes by id."""

    name = "kept"

    def __init__(self) -> None:
        self.seen: dict[object, EventEnvelope[Any]] = {}

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen[envelope.id] = envelope


async def test_a_projection_spec_delivery_is_a_batch_span(otel: Recorded) -> None:
    await (
        ProjectionSpec(Kept())
        .given([UserAdded("1", "ada"), UserAdded("2", "bob")])
        .then([1, 2], state=lambda p: [e.position for e in p.seen.values()])
    )

    batches: list[Any] = [s for s in otel.spans() if s.name == "process kept"]
    assert [(parent_of(b), dict(b.attributes or {})["messaging.batch.message_count"]) for b in batches] == [
        (None, 2),
        (None, 2),
    ]
    assert {dict(b.attributes or {})["epoch.checkpoint"] for b in batches} == {2}
    assert otel.metrics()["epoch.projection.events"] == [({"epoch.projection": "kept"}, 4)]
