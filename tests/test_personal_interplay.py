"""Personal data beside the other 0.2 features: snapshots (refused: a snapshot would keep the plaintext
a forget must erase), decisions over queries (keys preloaded before folding, created before appending),
and a ``CommandHandler``'s states when a forget lands while it folds, decides or appends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated

import pytest

from epoch import (
    Codec,
    CommandHandler,
    ConfigurationError,
    Decider,
    DecisionHandler,
    KeyStore,
    Personal,
    Query,
    QueryItem,
)
from epoch.personal import keystore
from epoch.snapshots import Snapshots
from epoch.stores import open_store
from epoch.stores.memory import MemoryEventStore
from epoch.testing._personal_domain import personal_codec, profiles
from tests.held_keys import HeldKeys


@dataclass(frozen=True)
class Claimed:
    user_id: str
    email: Annotated[str, Personal(subject="user_id")]


@dataclass(frozen=True)
class Claim:
    user_id: str
    email: str


def _decide(command: Claim, emails: tuple[str | None, ...]) -> list[Claimed]:
    if command.email in emails:
        raise ValueError(f"{command.email} is taken")
    return [Claimed(command.user_id, command.email)]


def _evolve(emails: tuple[str | None, ...], event: Claimed) -> tuple[str | None, ...]:
    return (*emails, event.email)


claims: Decider[Claim, tuple[str | None, ...], Claimed] = Decider(_decide, _evolve, ())


async def test_snapshots_with_a_codec_that_seals_personal_data_are_refused() -> None:
    async with open_store("memory://") as store:
        keys = KeyStore.for_store(store)
        with pytest.raises(ConfigurationError) as refused:
            CommandHandler(store, profiles, "profile", personal_codec(keys), snapshots=Snapshots(every=10))
        assert str(refused.value) == (
            "profile: snapshots and a codec that seals personal data do not mix: a snapshot would keep the"
            " plaintext of personal fields, which forgetting a subject must erase"
        )
        CommandHandler(store, profiles, "profile", personal_codec(keys))  # without snapshots: fine


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_a_decision_over_sealed_events_preloads_keys_and_sees_a_forget(url: str, tmp_path: object) -> None:
    location = url if url == "memory://" else f"sqlite:///{tmp_path}/p.db"
    async with open_store(location) as store:
        keys = KeyStore.for_store(store)
        codec = Codec([Claimed], keys=keys, tags=lambda event: ("claims",))
        handler = DecisionHandler(
            store,
            claims,
            codec,
            query=lambda c: Query([QueryItem(tags=("claims",))]),
            stream=lambda c: f"user-{c.user_id}",
        )
        await handler.execute(Claim("u1", "ada@example.com"))
        second = await handler.execute(Claim("u2", "bo@example.com"))
        assert second.state == ("ada@example.com", "bo@example.com")
        stored = [e.data async for e in store.read_all()]
        assert all(b"example.com" not in data for data in stored)  # ciphertext only
        # A fresh key cache (another process, say) folds the same events: it preloads the keys first.
        other = DecisionHandler(
            store,
            claims,
            Codec([Claimed], keys=KeyStore.for_store(store), tags=lambda event: ("claims",)),
            query=lambda c: Query([QueryItem(tags=("claims",))]),
            stream=lambda c: f"user-{c.user_id}",
        )
        with pytest.raises(ValueError, match="^ada@example.com is taken$"):
            await other.execute(Claim("u3", "ada@example.com"))
        assert await keys.forget("u1") == 1
        third = await handler.execute(Claim("u3", "ada@example.com"))  # u1's email reads as None now
        assert third.state == (None, "bo@example.com", "ada@example.com")


# -- a forget landing while a CommandHandler works: its cache of states (epoch/_forget.py) ----------------


@dataclass(frozen=True)
class Joined:
    account: str
    email: Annotated[str, Personal(subject="account")]


@dataclass(frozen=True)
class Noted:
    note: str  # a subject of its own: its first event gives it a key, written (held) before the append
    text: Annotated[str, Personal(subject="note")]


@dataclass(frozen=True)
class Account:
    email: str | None = None
    notes: tuple[str | None, ...] = ()


def _accounts(seen: list[Account]) -> Decider[Joined | Noted, Account, Joined | Noted]:
    """Commands are their own events; ``seen`` gets every state a decision was made on."""

    def decide(command: Joined | Noted, state: Account) -> list[Joined | Noted]:
        seen.append(state)
        return [command]

    def evolve(state: Account, event: Joined | Noted) -> Account:
        if isinstance(event, Joined):
            return Account(event.email, state.notes)
        return Account(state.email, (*state.notes, event.text))

    return Decider(decide, evolve, Account())


Handler = CommandHandler[Joined | Noted, Account, Joined | Noted]


async def _accounts_on(
    store: MemoryEventStore, seen: list[Account], cache: bool = True
) -> tuple[HeldKeys, KeyStore, Handler]:
    table = HeldKeys(store)
    keys = KeyStore(table, shared=True)
    handler: Handler = CommandHandler(store, _accounts(seen), "account", Codec([Joined, Noted], keys=keys), cache=cache)
    await handler.execute("u1", Joined("u1", "ada@example.com"))
    return table, keys, handler


async def _queued() -> None:
    """Let the tasks just created reach their stream's queue (nothing they await before it waits for I/O)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_command_whose_append_a_forget_overtakes_neither_caches_nor_returns_the_forgotten_values() -> None:
    store, seen = MemoryEventStore(), list[Account]()
    table, keys, handler = await _accounts_on(store, seen)
    inside, release = table.hold("write_keys")
    running = asyncio.create_task(handler.execute("u1", Noted("n1", "call back")))
    await inside.wait()  # decided on the address; the note's key is written, the append still to come
    assert await keys.forget("u1") == 1
    assert (await handler.load("u1")).state == Account(None)  # here at once (the handler has seen it)
    release.set()
    result = await running
    assert result.state == Account(None, ("call back",))  # folded again: returned after the forget
    assert [event.data for event in result.events] == [Noted("n1", "call back")]  # what decide returned
    assert (await handler.load("u1")).state == Account(None, ("call back",))
    again = await handler.execute("u1", Noted("n2", "again"))
    assert again.state == Account(None, ("call back", "again"))
    assert seen == [Account(), Account("ada@example.com"), Account(None, ("call back",))]


async def test_commands_queued_behind_a_batch_a_forget_overtakes_decide_on_the_redacted_values() -> None:
    """No cache at all: the state a busy stream's batch leaves for the next one (carried) is dropped too."""
    store, seen = MemoryEventStore(), list[Account]()
    table, keys, handler = await _accounts_on(store, seen, cache=False)
    inside, release = table.hold("write_keys")
    first = asyncio.create_task(handler.execute("u1", Noted("n1", "one")))  # alone: held
    await inside.wait()
    second = asyncio.create_task(handler.execute("u1", Noted("n2", "two")))  # queued: the next batch
    await _queued()
    inside, release_second = table.hold("write_keys")
    release.set()
    assert (await first).state == Account("ada@example.com", ("one",))  # returned before the forget
    await inside.wait()  # the second's batch decided on the address; its key written, the append to come
    assert await keys.forget("u1") == 1
    third = asyncio.create_task(handler.execute("u1", Noted("n3", "three")))  # sent after the forget
    await _queued()
    release_second.set()
    assert (await second).state == Account(None, ("one", "two"))
    assert (await third).state == Account(None, ("one", "two", "three"))
    assert seen[-1] == Account(None, ("one", "two"))  # the third decided on the redacted address
    assert seen[:-1] == [Account(), Account("ada@example.com"), Account("ada@example.com", ("one",))]


async def test_a_command_whose_fold_a_forget_overtakes_folds_again_before_deciding() -> None:
    store, seen = MemoryEventStore(), list[Account]()
    writer: Handler = CommandHandler(
        store, _accounts(seen), "account", Codec([Joined, Noted], keys=KeyStore.for_store(store))
    )
    await writer.execute("u1", Joined("u1", "ada@example.com"))
    await writer.execute("u1", Noted("n1", "one"))
    seen.clear()
    table = HeldKeys(store)
    keys = KeyStore(table, shared=True)  # a cache of its own, holding u1's key, not yet n1's
    await keys.preload(["u1"])
    handler: Handler = CommandHandler(store, _accounts(seen), "account", Codec([Joined, Noted], keys=keys))
    inside, release = table.hold("read_keys")
    running = asyncio.create_task(handler.execute("u1", Noted("n2", "two")))
    await inside.wait()  # the fold decoded the address, and waits for n1's key
    assert await keys.forget("u1") == 1
    release.set()
    assert (await running).state == Account(None, ("one", "two"))
    assert seen == [Account(None, ("one",))]  # never decided on the address
    assert (await handler.load("u1")).state == Account(None, ("one", "two"))


async def test_a_forget_elsewhere_seen_while_a_command_appends_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with a command waiting on a row lock while another process forgets: another request of this
    handler revalidates meanwhile, and the command's state (decided on the address) is not kept."""
    now = [time.monotonic()]
    monkeypatch.setattr(keystore, "_clock", lambda: now[0])
    store, seen = MemoryEventStore(), list[Account]()
    table = HeldKeys(store)
    keys = KeyStore(table)  # as another process would hold it: revalidated, not shared
    handler: Handler = CommandHandler(store, _accounts(seen), "account", Codec([Joined, Noted], keys=keys))
    await handler.execute("u1", Joined("u1", "ada@example.com"))
    await handler.execute("u2", Joined("u2", "grace@example.com"))
    inside, release = table.hold("write_keys")
    running = asyncio.create_task(handler.execute("u1", Noted("n1", "hello")))
    await inside.wait()
    assert await KeyStore.for_store(store).forget("u1") == 1  # another process's key store
    now[0] += keystore.REVALIDATE_AFTER
    assert (await handler.load("u2")).state == Account("grace@example.com")  # revalidates: sees the forget
    assert keys.generation == 1
    release.set()
    assert (await running).state == Account(None, ("hello",))
    for _ in range(3):
        now[0] += keystore.REVALIDATE_AFTER
        assert (await handler.load("u1")).state == Account(None, ("hello",))
    assert (await handler.execute("u1", Noted("n2", "later"))).state == Account(None, ("hello", "later"))
