"""Snapshots beyond the contract (which runs on every store): the policy, the state encoding, what is
logged and skipped, a store without the capability, the batch path, OS processes, and the 100,000-event
stream whose cold load reads at most 100 events (issue 12, item 1)."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest

from epoch import Codec, CommandHandler, ConfigurationError, Decider, EventStore, Snapshots, open_store
from epoch.snapshots import StateCodec
from epoch.stores import snapshot_store
from epoch.stores.memory import MemoryEventStore
from epoch.testing.contract_snapshots import Add, Added, CountingStore, Total, counter
from tests.snapshot_workers import POLICY

ROOT = Path(__file__).resolve().parent.parent


def handler(store: Any, policy: Snapshots | None = None, **options: Any) -> CommandHandler[Add, Total, Added]:
    return CommandHandler(store, counter, "acc", Codec([Added]), snapshots=policy, **options)


# -- the policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every": 0}, "Snapshots(every=...) must be an int from 1 to 9223372036854775807, not 0"),
        ({"every": True}, "Snapshots(every=...) must be an int from 1 to 9223372036854775807, not True"),
        ({"every": 2.5}, "Snapshots(every=...) must be an int from 1 to 9223372036854775807, not 2.5"),
        ({"version": 0}, "Snapshots(version=...) must be an int from 1 to 9223372036854775807, not 0"),
        ({"version": 2**63}, f"Snapshots(version=...) must be an int from 1 to 9223372036854775807, not {2**63}"),
        ({"keep": 0}, "Snapshots(keep=...) must be an int from 1 to 1000, not 0"),
        ({"keep": 1001}, "Snapshots(keep=...) must be an int from 1 to 1000, not 1001"),
    ],
)
def test_bad_policies_are_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Snapshots(**options)
    assert str(info.value) == message


def test_the_crossing_rule() -> None:
    every_100 = Snapshots(every=100)
    assert [every_100.due(old, new, None) for old, new in [(None, 99), (None, 100), (98, 99), (99, 100)]] == [
        False,
        True,
        False,
        True,
    ]
    assert [every_100.due(old, new, None) for old, new in [(100, 199), (150, 250), (199, 200), (0, 99)]] == [
        False,
        True,
        True,
        False,
    ]


async def test_a_callable_policy_gets_old_and_new_version_and_the_state() -> None:
    seen: list[tuple[int | None, int, Any]] = []

    def when(old: int | None, new: int, state: Total) -> bool:
        seen.append((old, new, state))
        return state.total >= 10

    async def run() -> None:
        store = MemoryEventStore()
        accounts = handler(store, Snapshots(every=when))
        await accounts.execute("1", Add(4, times=2))
        await accounts.execute("1", Add(4))
        status = await snapshot_store(store).snapshot_status()  # type: ignore[union-attr]
        assert [(s.stream, s.version) for s in status] == [("acc-1", 2)]

    await run()
    assert seen == [(None, 1, Total(8, 2)), (1, 2, Total(12, 3))]


async def test_a_policy_that_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(old: int | None, new: int, state: object) -> bool:
        raise RuntimeError("no")

    async def run() -> Any:
        return await handler(MemoryEventStore(), Snapshots(every=broken)).execute("1", Add(1))

    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        result = await run()
    assert result.state == Total(1, 1)
    assert [r.getMessage() for r in caplog.records] == ["acc-1: snapshot at version 0 not written (RuntimeError: no)"]


# -- the state encoding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


class Price(pydantic.BaseModel):
    amount: int
    currency: str = "EUR"


@dataclass(frozen=True)
class Cart:
    lines: tuple[Line, ...] = ()
    prices: dict[str, Price] = field(default_factory=dict)


class Basket(msgspec.Struct, frozen=True):
    items: list[str] = []


def test_dataclass_struct_and_pydantic_states_round_trip() -> None:
    cart = Cart((Line("a", 2), Line("b", 1)), {"a": Price(amount=3)})
    codec: StateCodec[Cart] = StateCodec(Cart)
    assert (
        codec.encode(cart)
        == b'{"lines":[{"sku":"a","quantity":2},{"sku":"b","quantity":1}],"prices":{"a":{"amount":3,"currency":"EUR"}}}'
    )
    assert codec.decode(codec.encode(cart)) == cart
    basket: StateCodec[Basket] = StateCodec(Basket)
    assert basket.decode(basket.encode(Basket(["x"]))) == Basket(["x"])
    price: StateCodec[Price] = StateCodec(Price)
    assert price.decode(price.encode(Price(amount=5, currency="USD"))) == Price(amount=5, currency="USD")
    totals: StateCodec[dict[str, Total]] = StateCodec(dict[str, Total])
    assert totals.decode(totals.encode({"a": Total(1, 1)})) == {"a": Total(1, 1)}


@dataclass(frozen=True)
class Loose:
    anything: Any = None
    ratio: float = 0.0


def test_a_state_that_would_not_read_back_is_refused() -> None:
    codec: StateCodec[Loose] = StateCodec(Loose)
    with pytest.raises(ValueError, match="^the encoded state decodes to a different value$"):
        codec.encode(Loose(anything=(1, 2)))  # a tuple in an Any field reads back as a list
    with pytest.raises(ValueError, match="^the encoded state does not decode back: ") as nan:
        codec.encode(Loose(ratio=math.nan))  # JSON has no NaN: null
    assert str(nan.value) == "the encoded state does not decode back: Expected `float`, got `null` - at `$.ratio`"
    with pytest.raises(ValueError, match="^the state cannot be encoded: "):
        codec.encode(Loose(anything=object()))
    with pytest.raises(ValueError, match=r"^Expected `object`, got `array`"):
        codec.decode(b"[]")


async def test_an_unwritable_state_is_logged_and_not_written(caplog: pytest.LogCaptureFixture) -> None:
    loose = Decider(lambda c, s: [Added(c.amount)], lambda s, e: Loose(anything=(s, e.amount)), Loose())

    async def run() -> list[Any]:
        store = MemoryEventStore()
        accounts = CommandHandler(store, loose, "acc", Codec([Added]), snapshots=Snapshots(every=1))
        await accounts.execute("1", Add(1))
        await accounts.execute("1", Add(1))
        return await snapshot_store(store).snapshot_status()  # type: ignore[union-attr]

    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        assert await run() == []
    assert [r.getMessage() for r in caplog.records] == [
        "acc-1: snapshot at version 1 not written (ValueError: the encoded state decodes to a different value)"
    ]


async def test_an_undecodable_snapshot_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> Any:
        store = MemoryEventStore()
        await handler(store, Snapshots(every=2)).execute("1", Add(3, times=3))
        snapshots = snapshot_store(store)
        assert snapshots is not None
        assert await snapshots.save_snapshot("acc-1", 2, 1, b'{"total": "three"}', 3)  # not a Total
        return await handler(store, Snapshots(every=2), cache=None).load("1")

    with caplog.at_level(logging.WARNING, logger="epoch.snapshots"):
        assert await run() == (Total(9, 3), 2)
    assert [r.getMessage() for r in caplog.records] == [
        "acc-1: snapshot at version 2 ignored: it does not decode (Expected `int`, got `str` - at `$.total`)"
    ]


async def test_a_state_type_is_needed_when_the_initial_state_is_none() -> None:
    maybe = Decider(
        lambda c, s: [Added(c.amount)] * c.times,
        lambda s, e: Total((s.total if s else 0) + e.amount, (s.count if s else 0) + 1),
        None,
    )
    with pytest.raises(ConfigurationError) as info:
        CommandHandler(MemoryEventStore(), maybe, "acc", Codec([Added]), snapshots=Snapshots())
    assert str(info.value) == "Snapshots(state_type=...) is needed when the initial state is None"

    async def run() -> Any:
        store = MemoryEventStore()
        policy = Snapshots(every=1, state_type=Total | None)
        await CommandHandler(store, maybe, "acc", Codec([Added]), snapshots=policy).execute("1", Add(5, times=2))
        cold = CommandHandler(CountingStore(store), maybe, "acc", Codec([Added]), snapshots=policy, cache=None)
        return await cold.load("1"), cold.store.read  # type: ignore[attr-defined]

    assert await run() == ((Total(10, 2), 1), 2)  # where the stream starts, and the snapshot's own event


def test_snapshots_must_be_a_policy() -> None:
    with pytest.raises(ConfigurationError) as info:
        CommandHandler(MemoryEventStore(), counter, "acc", Codec([Added]), snapshots=100)  # type: ignore[arg-type]
    assert str(info.value) == "snapshots must be a Snapshots(...) policy, not 100"


# -- stores ---------------------------------------------------------------------------------------


class ThirdPartyStore:
    """An event store from elsewhere: everything but the snapshot capability."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_store_without_the_capability_folds_every_event(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> Any:
        plain = ThirdPartyStore(MemoryEventStore())
        accounts = handler(plain, Snapshots(every=2))
        assert accounts._snapshots is None
        await accounts.execute("1", Add(1, times=5))
        return await handler(plain, Snapshots(every=2), cache=None).load("1")

    with caplog.at_level(logging.INFO, logger="epoch.snapshots"):
        assert await run() == (Total(5, 5), 4)
    assert [r.getMessage() for r in caplog.records] == [
        "ThirdPartyStore keeps no snapshots: every load folds the whole stream"
    ] * 2


async def test_the_batch_path_snapshots_the_whole_append(store: EventStore) -> None:
    """Commands queued on a busy stream are appended together: the snapshot is the state after all of them."""
    accounts = handler(store, Snapshots(every=10, keep=1000))
    results = await asyncio.gather(*(accounts.execute("1", Add(1)) for _ in range(60)))
    assert sorted(r.version or 0 for r in results) == list(range(60))
    snapshots = snapshot_store(store)
    assert snapshots is not None
    plain = handler(store, cache=None)
    (status,) = await snapshots.snapshot_status()
    assert status.count >= 1
    for version in range(60):
        found = await snapshots.load_snapshot("acc-1", 1, at_most=version)
        if found is not None and found.version == version:
            assert msgspec.json.decode(found.data, type=Total) == await plain.state_at("1", version=version)


@pytest.mark.slow
async def test_processes_read_and_write_snapshots_of_one_stream(sql_store_url: str) -> None:
    url = sql_store_url
    async with open_store(url):
        pass  # the schema, before the workers race to create it
    commands = 40
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.snapshot_workers", url, str(worker), str(commands)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(3)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=240) for w in workers))
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert int(out.strip()) == commands
    async with open_store(url) as store:
        assert await handler(store, POLICY, cache=None).load("shared") == (Total(120, 120), 119)
        snapshots = snapshot_store(store)
        assert snapshots is not None
        plain = handler(store, cache=None)
        checked = 0
        for version in range(120):  # every snapshot any process wrote is the fold at its version
            found = await snapshots.load_snapshot("acc-shared", 1, at_most=version)
            if found is not None and found.version == version:
                assert msgspec.json.decode(found.data, type=Total) == await plain.state_at("shared", version=version)
                checked += 1
        assert checked >= 10  # 17 crossings of a multiple of 7; a racing append may cross two at once


# -- 100,000 events ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_cold_load_of_100k_events_reads_at_most_100(sql_store_url: str) -> None:
    async with open_store(sql_store_url) as store:
        writer = handler(store, Snapshots(every=100))
        for _ in range(99):
            await writer.execute("big", Add(1, times=1000))  # versions 0 .. 98,999
        for _ in range(1000):
            await writer.execute("big", Add(1))  # 99,000 .. 99,999: the last snapshot at 99,900
        counting = CountingStore(store)
        cold = handler(counting, Snapshots(every=100), cache=None)
        started = time.perf_counter()
        assert await cold.load("big") == (Total(100_000, 100_000), 99_999)
        with_snapshot = time.perf_counter() - started
        assert counting.read == 101  # where the stream starts, the snapshot's own event, 99,901 .. 99,999
        counting.read = 0
        assert await cold.state_at("big", version=99_950) == Total(99_951, 99_951)
        assert counting.read == 52  # where the stream starts, the snapshot's own event, 99,901 .. 99,950
        counting.read = 0
        started = time.perf_counter()
        assert await handler(counting, cache=None).load("big") == (Total(100_000, 100_000), 99_999)
        without = time.perf_counter() - started
        assert counting.read == 100_000
        assert with_snapshot * 20 < without, (with_snapshot, without)


async def test_a_handler_that_loaded_a_snapshot_writes_the_next_one(store: EventStore) -> None:
    await handler(store, Snapshots(every=10)).execute("1", Add(1, times=25))  # a snapshot at 24
    later = handler(store, Snapshots(every=10, keep=5), cache=None)  # folds from it: its basis is the snapshot's
    for _ in range(10):
        await later.execute("1", Add(1))  # 25 .. 34: crosses 30
    snapshots = snapshot_store(store)
    assert snapshots is not None
    (status,) = await snapshots.snapshot_status()
    assert (status.version, status.count) == (30, 2)
    found = await snapshots.load_snapshot("acc-1", 1)
    assert found is not None and (found.first_visible, msgspec.json.decode(found.data, type=Total)) == (
        0,
        Total(31, 31),
    )


# -- limits that hide events: a snapshot is folded on only while the stream reads on from it ----------------


@pytest.mark.parametrize(
    ("hide", "shown"),
    [
        ({"max_count": 3}, range(7, 10)),  # the snapshot's event (5) and the one after it (6) are hidden
        ({"max_count": 5}, range(5, 10)),  # the snapshot's event reads, the events folded into it do not
        ({"max_count": 10}, range(10)),  # nothing hidden: the snapshot is used
    ],
)
async def test_a_snapshot_is_not_folded_on_where_limits_hide_events(
    store: EventStore, hide: dict[str, int], shown: range
) -> None:
    """Without snapshots a load folds the events the limits show; with them it must come to the same
    state: never the snapshot's state plus the events read after a gap the limits made."""
    writer = handler(store, Snapshots(every=5))
    for amount in range(10):
        await writer.execute("1", Add(2**amount))  # a snapshot at 5; each event's amount tells which it is
    await store.set_stream_limits("acc-1", max_count=hide["max_count"])
    shows = Total(sum(2**v for v in shown), len(shown))
    counting = CountingStore(store)
    cold, plain = handler(counting, Snapshots(every=5), cache=None), handler(store, cache=None)
    assert await plain.load("1") == (shows, 9)
    assert await cold.load("1") == (shows, 9)
    assert counting.read == (6 if len(shown) == 10 else 1 + len(shown))  # the snapshot's 5 to 9 (1: the start)
    for version in shown:
        expected = Total(sum(2**v for v in shown if v <= version), version - shown.start + 1)
        assert await cold.state_at("1", version=version) == expected == await plain.state_at("1", version=version)
    result = await handler(store, Snapshots(every=5), cache=None).execute("1", Add(2**10))
    assert (result.version, result.state) == (10, Total(shows.total + 2**10, shows.count + 1))


# -- two deciders over one category (docs/snapshots.md, "version") -----------------------------------------


@dataclass(frozen=True)
class Tally:
    """Another view of the ``acc`` streams: ``total`` counts the events (``Total.total`` sums amounts)."""

    total: int = 0


tally = Decider(lambda c, s: [Added(c.amount)] * c.times, lambda s, e: Tally(s.total + 1), Tally())


async def test_two_deciders_on_one_category_need_two_schema_versions(store: EventStore) -> None:
    """A stream's snapshots are keyed by the stream and ``Snapshots(version=...)`` only, not by the
    decider: two deciders over one category must use two versions. With one version, the second loads
    the first one's snapshot (its fields decode as the other state) and decides on it: what the docs warn of."""
    totals = handler(store, Snapshots(every=5, version=1))
    await totals.execute("1", Add(10, times=6))  # a snapshot of Total(60, 6) at version 5
    apart = CommandHandler(store, tally, "acc", Codec([Added]), snapshots=Snapshots(every=5, version=2), cache=None)
    assert await apart.load("1") == (Tally(6), 5)  # no snapshot of its version: the fold
    await apart.execute("1", Add(10, times=5))  # 6 .. 10: its own snapshot, at version 10
    assert await apart.load("1") == (Tally(11), 10)
    assert await handler(store, Snapshots(every=5, version=1), cache=None).load("1") == (Total(110, 11), 10)
    shared = CommandHandler(store, tally, "acc", Codec([Added]), snapshots=Snapshots(every=5, version=1), cache=None)
    assert await shared.load("1") == (Tally(65), 10)  # Total(60, 6) read as Tally(60), then 5 events: not 11
