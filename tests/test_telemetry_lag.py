"""The projection lag gauge counts events. Positions are not a count: PostgreSQL's (``xid << 32 | ordinal``)
and KurrentDB's are sparse, and erasure leaves gaps on every store, so the probe reads the events after
the checkpoint (at most ``LAG_GAUGE_LIMIT``) once a second, and in between goes down by what it handled."""

from __future__ import annotations

from typing import Any

import pytest

from epoch import NO_STREAM, EventStore, open_store, telemetry
from epoch.examples.users import AddUser, UserService, codec
from epoch.records import EventEnvelope, RecordedEvent
from epoch.telemetry import _otel
from epoch.telemetry._otel import LAG_GAUGE_LIMIT, ProjectionProbe
from epoch.testing import new_events as new
from tests.kurrentdb_fake import FakeKurrentDB
from tests.test_telemetry import Recorded, otel  # noqa: F401 (the SDK fixture)


def lag_of(recorded: Recorded) -> Any:
    [(labels, value)] = recorded.metrics()["epoch.projection.lag"]
    assert labels == {"epoch.projection": "lagging"}
    return value


def probe() -> ProjectionProbe:
    current = telemetry.current()
    assert current is not None
    return current.projection("lagging")


async def users_log(store: EventStore, directories: int, users: int) -> list[RecordedEvent]:
    for d in range(directories):
        service = UserService(store, f"d{d}")
        for i in range(users):
            await service.add_user(AddUser(f"user{i}"))
    return [recorded async for recorded in store.read_all()]


def envelopes(records: list[RecordedEvent]) -> list[EventEnvelope[Any]]:
    return [codec.decode(recorded) for recorded in records]


class Clock:
    """``time`` for the probe: a monotonic clock that moves only when told (a count is taken once a second)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


async def test_the_lag_is_a_count_of_events_on_every_store(
    otel: Recorded,  # noqa: F811
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(_otel, "time", clock)
    async with open_store(store_url) as store:
        log = await users_log(store, 3, 4)
        assert len(log) == 12
        lagging = probe()
        await lagging.measure_lag(store, log[4].position)
        assert lag_of(otel) == 7  # counted, whatever the distance in positions
        # Within the second: down by the events handled since the count, not read again.
        await UserService(store, "d9").add_user(AddUser("late"))
        with lagging.batch(envelopes(log[5:7]), log[6].position):
            pass
        await lagging.measure_lag(store, log[6].position)
        assert lag_of(otel) == 5
        with lagging.batch(envelopes(log[7:]), log[-1].position):
            pass
        await lagging.measure_lag(store, log[-1].position)
        assert lag_of(otel) == 0  # at the head counted to (the late event is counted at the next count)
        clock.now += 1.0
        await lagging.measure_lag(store, log[-1].position)
        assert lag_of(otel) == 1  # counted again a second later


async def test_erased_events_are_no_lag(otel: Recorded, store_url: str) -> None:  # noqa: F811
    async with open_store(store_url) as store:
        await store.append("gone-1", new(10), NO_STREAM)
        await store.append("kept-1", new(2), NO_STREAM)
        await store.truncate_before("gone-1", 9)  # erases versions 0-8 at once
        assert [(r.stream, r.version) async for r in store.read_all()] == [
            ("gone-1", 9),
            ("kept-1", 0),
            ("kept-1", 1),
        ]
        await probe().measure_lag(store, 0)
        assert lag_of(otel) == 3


async def test_the_count_stops_at_the_limit(otel: Recorded) -> None:  # noqa: F811
    async with open_store("memory://") as store:
        for s in range(LAG_GAUGE_LIMIT // 1_000 + 1):
            await store.append(f"bulk-{s}", new(1_000), NO_STREAM)
        assert await store.head_position() == LAG_GAUGE_LIMIT + 1_000
        await probe().measure_lag(store, 0)
        assert lag_of(otel) == LAG_GAUGE_LIMIT
        lagging = probe()
        await lagging.measure_lag(store, 1_500)
        assert lag_of(otel) == LAG_GAUGE_LIMIT - 500  # fewer than the limit after it: exact


async def test_counting_makes_no_read_spans(otel: Recorded) -> None:  # noqa: F811
    current = telemetry.current()
    assert current is not None
    async with open_store("memory://") as plain:
        store = current.traced(plain)
        await store.append("s-1", new(3), NO_STREAM)
        await probe().measure_lag(store, 1)
        assert lag_of(otel) == 2
        assert [span.name for span in otel.spans()] == ["append s"]  # no read_all span


async def test_the_lag_is_a_count_of_events_on_kurrentdb(otel: Recorded) -> None:  # noqa: F811
    """KurrentDB's positions are commit positions (bytes into its log): far apart, never a count."""
    with FakeKurrentDB() as server:
        async with open_store(server.uri) as store:
            log = await users_log(store, 2, 3)
            assert log[-1].position - log[1].position > 4
            await probe().measure_lag(store, log[1].position)
            assert lag_of(otel) == 4
