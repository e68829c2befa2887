"""A small domain with personal data, for the personal-data contract and tests: a profile per user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from epoch.codec import Codec
from epoch.commands import CommandHandler
from epoch.domain import Decider
from epoch.personal import KeyStore, Personal
from epoch.stores import EventStore

__all__ = [
    "Profile",
    "ProfileEvent",
    "Register",
    "Registered",
    "Rename",
    "Renamed",
    "personal_codec",
    "profile_handler",
    "profiles",
]


@dataclass(frozen=True)
class Registered:
    user_id: str
    email: Annotated[str, Personal(subject="user_id")]
    name: Annotated[str, Personal(subject="user_id")] = "anonymous"


@dataclass(frozen=True)
class Renamed:
    user_id: str
    name: Annotated[str | None, Personal(subject="user_id")]
    reason: str = ""


ProfileEvent = Registered | Renamed


@dataclass(frozen=True)
class Register:
    email: str
    name: str


@dataclass(frozen=True)
class Rename:
    name: str
    reason: str = ""


@dataclass(frozen=True)
class Profile:
    user_id: str | None = None
    email: str | None = None
    name: str | None = None
    renames: int = 0


def _decide(command: Register | Rename, state: Profile, services: object = None) -> list[ProfileEvent]:
    user_id = str(services) if services is not None else (state.user_id or "")
    match command:
        case Register(email, name):
            if state.user_id is not None:
                raise ValueError(f"{state.user_id} is registered already")
            return [Registered(user_id, email, name)]
        case Rename(name, reason):
            if state.user_id is None:
                raise ValueError("not registered")
            return [] if name == state.name else [Renamed(state.user_id, name, reason)]
    raise TypeError(command)  # pragma: no cover - every command is matched


def _evolve(state: Profile, event: ProfileEvent) -> Profile:
    match event:
        case Registered(user_id, email, name):
            return Profile(user_id, email, name)
        case Renamed(_, name, _):
            return Profile(state.user_id, state.email, name, state.renames + 1)
    return state  # pragma: no cover


profiles: Decider[Register | Rename, Profile, ProfileEvent] = Decider(_decide, _evolve, Profile())
"""``decide`` takes the user id as its ``services`` for ``Register`` (the stream's id)."""


def personal_codec(keys: KeyStore) -> Codec[ProfileEvent]:
    """The profile events' codec, sealing personal fields with ``keys``."""
    return Codec([Registered, Renamed], keys=keys)


def profile_handler(store: EventStore) -> CommandHandler[Register | Rename, Profile, ProfileEvent]:
    """The profiles' handler on ``store`` with its key store (an ``--app`` factory for the explorer)."""
    return CommandHandler(store, profiles, "profile", personal_codec(KeyStore.for_store(store)))
