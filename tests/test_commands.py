"""CommandHandler on every store: retries, explicit guards, idempotent command ids, metadata, time travel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from epoch import (
    NO_STREAM,
    CachedState,
    Codec,
    CommandHandler,
    ConfigurationError,
    Decider,
    EventStore,
    InvalidEvent,
    InvalidStreamName,
    InvalidVersion,
    LoadedState,
    NewEvent,
    Snapshots,
    StateCache,
    StreamClosed,
    StreamDeleted,
    UnknownEventType,
    WrongExpectedVersion,
)
from epoch.records import AppendResult, ExpectedVersionLike
from tests.bank import Close as Close
from tests.bank import Closed as Closed
from tests.bank import Deposit as Deposit
from tests.bank import Deposited as Deposited
from tests.bank import Open as Open
from tests.bank import Opened as Opened

# -- the account domain of tests/bank.py, with a state that counts deposits and a decide that takes a
# bonus from its services --------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    owner: str | None = None
    balance: int = 0
    deposits: int = 0
    closed: bool = False


class Refused(Exception):
    pass


def decide(command: object, state: Account, services: Any = None) -> list[object]:
    if isinstance(command, Open):
        return [] if state.owner == command.owner else [Opened(command.owner)]
    if state.owner is None:
        raise Refused("not opened")
    if isinstance(command, Deposit):
        if command.amount <= 0:
            raise Refused("amount must be positive")
        bonus = services["bonus"] if services else 0
        return [Deposited(command.amount + bonus)]
    if isinstance(command, Close):
        return [Closed()]
    raise TypeError(command)


def evolve(state: Account, event: object) -> Account:
    if isinstance(event, Opened):
        return Account(event.owner, state.balance, state.deposits)
    if isinstance(event, Deposited):
        return Account(state.owner, state.balance + event.amount, state.deposits + 1)
    if isinstance(event, Closed):
        return Account(state.owner, state.balance, state.deposits, True)
    return state


accounts: Decider[object, Account, object] = Decider(decide, evolve, Account(), is_terminal=lambda s: s.closed)
codec: Codec[object] = Codec([Opened, Deposited, Closed])


def handler_for(store: EventStore, **options: Any) -> CommandHandler[object, Account, object]:
    return CommandHandler(store, accounts, "account", codec, **options)


class RacingStore:
    """A real store that lets ``interfere`` other appends land just before each of ours."""

    def __init__(self, store: EventStore, interfere: int) -> None:
        self.store = store
        self.interfere = interfere

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(
        self, stream: str, events: Iterable[NewEvent], expected_version: ExpectedVersionLike = None
    ) -> AppendResult:
        if self.interfere > 0:
            self.interfere -= 1
            await self.store.append(stream, [codec.encode(Deposited(1))])
        return await self.store.append(stream, events, expected_version)

    def read_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self.store.read_stream(*args, **kwargs)


# -- tests ---------------------------------------------------------------------------------------


async def test_execute_appends_and_returns_state(store: EventStore) -> None:
    handler = handler_for(store)
    opened = await handler.execute("1", Open("ada"))
    assert (opened.stream, opened.version) == ("account-1", 0)
    assert opened.state == Account("ada")
    result = await handler.execute("1", Deposit(5))
    assert result.version == 1
    assert result.state == Account("ada", 5, 1)
    [envelope] = result.events
    assert envelope.data == Deposited(5)
    assert (envelope.stream, envelope.version, envelope.type) == ("account-1", 1, "Deposited")
    assert envelope.position == result.position
    stored = [e async for e in store.read_stream("account-1")]
    assert [e.position for e in stored] == [opened.position, result.position]
    assert stored[1].id == envelope.id
    assert await handler.load("1") == LoadedState(Account("ada", 5, 1), 1)
    state, version = await handler.load("1")
    assert (state.balance, version) == (5, 1)


async def test_empty_decision_appends_nothing(store: EventStore) -> None:
    handler = handler_for(store)
    first = await handler.execute("1", Open("ada"))
    again = await handler.execute("1", Open("ada"))
    assert again.events == []
    assert (again.version, again.position) == (first.version, first.position)
    assert await store.head_position() == first.position


async def test_decide_errors_pass_through_and_store_nothing(store: EventStore) -> None:
    handler = handler_for(store)
    with pytest.raises(Refused, match="not opened"):
        await handler.execute("1", Deposit(5))
    await handler.execute("1", Open("ada"))
    with pytest.raises(Refused, match="positive"):
        await handler.execute("1", Deposit(-1))
    assert await store.stream_version("account-1") == 0


async def test_services_reach_decide(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    result = await handler.execute("1", Deposit(5), services={"bonus": 2})
    assert result.state.balance == 7


async def test_conflicts_are_retried_with_a_fresh_decision(store: EventStore) -> None:
    racing = RacingStore(store, interfere=2)
    await handler_for(store).execute("1", Open("ada"))
    handler = CommandHandler(racing, accounts, "account", codec, retries=3)
    result = await handler.execute("1", Deposit(10))
    assert result.attempts == 3
    assert result.state == Account("ada", 12, 3)
    assert result.version == 3


async def test_retries_run_out_with_the_last_conflict(store: EventStore) -> None:
    await handler_for(store).execute("1", Open("ada"))
    racing = RacingStore(store, interfere=10)
    handler = CommandHandler(racing, accounts, "account", codec, retries=2)
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute("1", Deposit(10))
    assert info.value.stream == "account-1"
    assert info.value.actual == 3  # 3 attempts, each lost to one interfering write
    assert racing.interfere == 7


async def test_explicit_expected_version_is_never_retried(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"), NO_STREAM)
    await handler.execute("1", Deposit(1), 0)
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute("1", Deposit(1), 0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    racing = RacingStore(store, interfere=1)
    raced = CommandHandler(racing, accounts, "account", codec)
    with pytest.raises(WrongExpectedVersion):
        await raced.execute("1", Deposit(1), 1)
    assert await store.stream_version("account-1") == 2  # only the interfering write


async def test_concurrent_tasks_lose_no_update(store: EventStore) -> None:
    handlers = [handler_for(store, retries=100, backoff=0.0005) for _ in range(4)]
    for stream in range(4):
        await handlers[0].execute(stream, Open("ada"))

    async def worker(n: int) -> int:
        done = 0
        for i in range(10):
            await handlers[n % 4].execute((n + i) % 4, Deposit(1))
            done += 1
        return done

    done = sum(await asyncio.gather(*(worker(n) for n in range(16))))
    states = [(await handlers[0].load(s)).state for s in range(4)]
    assert sum(s.balance for s in states) == done == 160
    for s in range(4):
        versions = [e.version async for e in store.read_stream(f"account-{s}")]
        assert versions == list(range(len(versions)))
    positions = [e.position async for e in store.read_all()]
    assert positions == sorted(positions)


async def test_command_id_makes_execution_idempotent(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    first = await handler.execute("1", Deposit(5), command_id="cmd-1")
    again = await handler.execute("1", Deposit(5), command_id="cmd-1")
    assert again.events == first.events
    assert (again.version, again.position, again.state) == (first.version, first.position, first.state)
    other = handler_for(store, cache=None)  # another handler, e.g. in another process
    await other.execute("1", Deposit(1))
    later = await other.execute("1", Deposit(5), command_id="cmd-1")
    assert later.version == first.version
    assert later.state == Account("ada", 5, 1)  # the state right after the first execution
    assert (await other.load("1")).state.balance == 6


async def test_concurrent_duplicate_commands_apply_once(store: EventStore) -> None:
    await handler_for(store).execute("1", Open("ada"))
    handlers = [handler_for(store, cache=None, retries=20) for _ in range(8)]
    results = await asyncio.gather(*(h.execute("1", Deposit(5), command_id="same") for h in handlers))
    assert {r.version for r in results} == {1}
    assert (await handlers[0].load("1")).state == Account("ada", 5, 1)
    assert await store.stream_version("account-1") == 1


async def test_command_id_after_a_lost_reply(store: EventStore) -> None:
    """The events were appended but the caller never heard back: re-sending returns the original result."""
    await handler_for(store).execute("1", Open("ada"))
    command_id = uuid4()
    from epoch.commands import event_id_for

    encoded = codec.encode(
        Deposited(5), metadata={"$command_id": str(command_id)}, id=event_id_for(command_id, "account-1", 0)
    )
    written = await store.append("account-1", [encoded], 0)
    result = await handler_for(store).execute("1", Deposit(5), command_id=command_id)
    assert (result.version, result.position) == (written.version, written.position)
    assert [e.data for e in result.events] == [Deposited(5)]
    assert result.state.balance == 5
    assert await store.stream_version("account-1") == 1


async def test_failed_decision_records_no_command_id(store: EventStore) -> None:
    handler = handler_for(store)
    with pytest.raises(Refused):
        await handler.execute("1", Deposit(5), command_id="c1")
    await handler.execute("1", Open("ada"))
    result = await handler.execute("1", Deposit(5), command_id="c1")
    assert result.state.balance == 5


async def test_metadata_correlation_and_causation(store: EventStore) -> None:
    handler = handler_for(store)
    result = await handler.execute("1", Open("ada"), metadata={"user": "admin"}, command_id="c-1")
    [envelope] = result.events
    assert envelope.metadata["user"] == "admin"
    assert envelope.metadata["$command_id"] == "c-1"
    assert envelope.causation_id == "c-1"
    assert envelope.correlation_id == "c-1"
    chained = await handler.execute("1", Deposit(1), causation_id=str(envelope.id))
    assert chained.events[0].causation_id == str(envelope.id)
    assert chained.events[0].correlation_id == "c-1"  # the causing event's correlation
    explicit = await handler.execute("1", Deposit(1), causation_id="outside", correlation_id="trace-9")
    assert (explicit.events[0].causation_id, explicit.events[0].correlation_id) == ("outside", "trace-9")
    unknown = await handler.execute("1", Deposit(1), causation_id="not-an-event")
    assert unknown.events[0].correlation_id == "not-an-event"
    stored = [codec.decode(e) async for e in store.read_stream("account-1")]
    assert stored[0].metadata["user"] == "admin"
    assert stored[1].correlation_id == "c-1"


async def test_terminal_stream_refuses_commands(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Close())
    with pytest.raises(StreamClosed) as info:
        await handler.execute("1", Deposit(1))
    assert (info.value.stream, info.value.version) == ("account-1", 1)
    assert await store.stream_version("account-1") == 1


async def test_state_at_version_and_time(store: EventStore) -> None:
    handler = handler_for(store)
    await handler.execute("1", Open("ada"))
    await handler.execute("1", Deposit(1))
    await handler.execute("1", Deposit(2))
    assert (await handler.state_at("1", version=0)).balance == 0
    assert (await handler.state_at("1", version=1)).balance == 1
    assert (await handler.state_at("1")).balance == 3
    events = [e async for e in store.read_stream("account-1")]
    assert (await handler.state_at("1", at=events[1].recorded_at)).balance >= 1
    assert (await handler.state_at("1", at=datetime.now(UTC) + timedelta(seconds=1))).balance == 3
    assert (await handler.state_at("1", at=events[0].recorded_at - timedelta(seconds=1))) == Account()
    with pytest.raises(InvalidVersion):
        await handler.state_at("1", version=3)
    with pytest.raises(InvalidVersion):
        await handler.state_at("1", version=-1)
    with pytest.raises(InvalidVersion):
        await handler.state_at("1", at=datetime.now())  # naive


async def test_cache_never_misses_another_handlers_writes(store: EventStore) -> None:
    cached = handler_for(store)
    other = handler_for(store, cache=None)
    await cached.execute("1", Open("ada"))
    await cached.execute("1", Deposit(1))
    await other.execute("1", Deposit(10))
    result = await cached.execute("1", Deposit(100))
    assert result.state.balance == 111
    assert result.version == 3
    assert cached.cache is not None and len(cached.cache) == 1


def test_the_cache_keeps_the_newest_version_and_no_empty_streams() -> None:
    cache: StateCache[int] = StateCache(max_entries=2)
    cache.put("a", CachedState(5, 1, 2))
    cache.put("a", CachedState(4, 0, 1))  # an older version: ignored
    cache.put("b", CachedState(0, None, 0))  # a stream without events: nothing to fold on from
    assert (cache.get("a"), cache.get("b"), len(cache)) == (CachedState(5, 1, 2), None, 1)
    cache.put("b", CachedState(1, 0, 3))
    cache.put("c", CachedState(2, 0, 4))  # one too many: the least recently used, "a", goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, CachedState(1, 0, 3), CachedState(2, 0, 4))


@pytest.mark.parametrize("size", [0, -1, 1.5, float("nan"), "10", None, True, False])
def test_a_cache_size_that_is_not_an_int_from_1_is_a_configuration_error(size: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        StateCache(size)
    assert str(info.value) == f"StateCache(max_entries=...) must be an int >= 1, not {size!r}"


def test_a_cache_of_one_entry_or_a_huge_one_is_accepted() -> None:
    assert (StateCache(1).max_entries, StateCache(2**100).max_entries) == (1, 2**100)


async def test_undecodable_history_raises(store: EventStore) -> None:
    await store.append("account-1", [NewEvent("Mystery", b"{}")])
    with pytest.raises(UnknownEventType) as info:
        await handler_for(store).execute("1", Deposit(1))
    assert (info.value.stream, info.value.version, info.value.type) == ("account-1", 0, "Mystery")


async def test_bad_category_and_id(store: EventStore) -> None:
    with pytest.raises(InvalidStreamName):
        CommandHandler(store, accounts, "has-dash", codec)
    with pytest.raises(InvalidStreamName):
        await handler_for(store).execute("bad\nid", Open("ada"))
    assert await store.head_position() == 0


async def test_an_unregistered_event_names_the_stream(store: EventStore) -> None:
    @dataclass(frozen=True)
    class Stray:
        pass

    stray: Decider[object, Account, object] = Decider(lambda c, s: [Opened("x"), Stray()], evolve, Account())
    handler = CommandHandler(store, stray, "account", codec)
    with pytest.raises(InvalidEvent) as info:
        await handler.execute("1", Open("x"))
    assert (info.value.stream, info.value.index) == ("account-1", 1)
    assert (
        str(info.value) == f"account-1: invalid event at index 1: {Stray.__qualname__} is not registered with the codec"
    )
    assert await store.head_position() == 0


# -- time travel to a version the stream no longer shows, and to a tombstone ------------------------------


async def deposits(handler: CommandHandler[object, Account, object], count: int) -> None:
    await handler.execute("1", Open("ada"))
    for _ in range(count - 1):
        await handler.execute("1", Deposit(1))


@pytest.mark.parametrize("policy", [None, Snapshots(every=2)], ids=["plain", "snapshots"])
async def test_state_at_a_version_the_stream_no_longer_shows_is_invalid(
    store: EventStore, policy: Snapshots | None
) -> None:
    """A version hidden by a truncation, by limits or by a delete is not a state of the stream: the
    initial state stood in for it."""
    handler = handler_for(store, snapshots=policy, cache=None)
    await deposits(handler, 6)  # versions 0 .. 5
    hidden: list[tuple[Callable[[], Awaitable[object]], int, str]] = [
        (lambda: store.truncate_before("account-1", 4), 1, "account-1: invalid version 1 (stream version 5)"),
        (lambda: store.set_stream_limits("account-1", max_count=1), 4, "account-1: invalid version 4 (stream version 5)"),
    ]  # fmt: skip
    for hide, version, message in hidden:
        await hide()
        with pytest.raises(InvalidVersion) as info:
            await handler.state_at("1", version=version)
        assert str(info.value) == message
        assert (info.value.requested, info.value.actual) == (version, 5)
    assert await handler.state_at("1", version=5) == Account(None, 1, 1)  # the one event max_count shows
    await store.set_stream_limits("account-1")
    assert await handler.state_at("1", version=5) == Account(None, 2, 2)  # from version 4 on
    await store.delete_stream("account-1")
    with pytest.raises(InvalidVersion) as deleted:
        await handler.state_at("1", version=5)
    assert str(deleted.value) == "account-1: invalid version 5 (stream version no stream)"
    assert await handler.state_at("1") == Account()  # as load: an empty stream
    await handler.execute("1", Open("bob"))  # re-created at version 6
    with pytest.raises(InvalidVersion) as recreated:
        await handler.state_at("1", version=2)
    assert str(recreated.value) == "account-1: invalid version 2 (stream version 6)"
    assert await handler.state_at("1", version=6) == Account("bob")


@pytest.mark.parametrize(
    "travel", [{}, {"version": 0}, {"version": 9}, {"at": datetime(2999, 1, 1, tzinfo=UTC)}], ids=str
)
async def test_state_at_on_a_tombstone_raises_stream_deleted(store: EventStore, travel: dict[str, Any]) -> None:
    handler = handler_for(store, cache=None)
    await deposits(handler, 3)
    await store.delete_stream("account-1", hard=True)
    with pytest.raises(StreamDeleted) as info:
        await handler.state_at("1", **travel)
    assert str(info.value) == "account-1: the stream is deleted (last version 2)"
    with pytest.raises(StreamDeleted):
        await handler.load("1")  # as load does
