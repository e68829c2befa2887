"""Personal data beside the other 0.2 features: snapshots (refused: a snapshot would keep the plaintext
a forget must erase) and decisions over queries (keys preloaded before folding, created before appending)."""

from __future__ import annotations

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
from epoch.snapshots import Snapshots
from epoch.stores import open_store
from epoch.testing._personal_domain import personal_codec, profiles


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
