"""The Users context: a directory of users with unique names (the origin design's ``Users`` EventContext).

Pure: ids come in through ``services`` (the origin design's ``Services``), never from a clock or RNG here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from epoch import Codec, Decider


# -- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddUser:
    name: str


@dataclass(frozen=True, slots=True)
class UpdateUser:
    user_id: str
    name: str | None = None


UserCommand = AddUser | UpdateUser


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserAdded:
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class UserUpdated:
    user_id: str
    name: str | None


UserEvent = UserAdded | UserUpdated


# -- state -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class UserState:
    users: dict[str, User] = field(default_factory=dict)

    def has_name(self, name: str, other_than: str | None = None) -> bool:
        return any(u.name == name and u.user_id != other_than for u in self.users.values())


# -- errors (the origin design's UserError ADT) -----------------------------------------------
class UserError(Exception):
    """A command the Users context refuses."""


class UnknownUser(UserError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"unknown user {user_id!r}")
        self.user_id = user_id


class DuplicateName(UserError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a user named {name!r} already exists")
        self.name = name


# -- services ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserServices:
    """What ``decide`` may call out to: here, only an id generator."""

    new_user_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]


DEFAULT_SERVICES = UserServices()


# -- the decider -------------------------------------------------------------------------------
def decide(command: UserCommand, state: UserState, services: UserServices = DEFAULT_SERVICES) -> list[UserEvent]:
    match command:
        case AddUser(name=name):
            if state.has_name(name):
                raise DuplicateName(name)
            return [UserAdded(user_id=services.new_user_id(), name=name)]
        case UpdateUser(user_id=user_id, name=name):
            user = state.users.get(user_id)
            if user is None:
                raise UnknownUser(user_id)
            if name is None or name == user.name:
                return []  # nothing to change
            if state.has_name(name, other_than=user_id):
                raise DuplicateName(name)
            return [UserUpdated(user_id=user_id, name=name)]
    raise TypeError(f"not a Users command: {command!r}")


def evolve(state: UserState, event: UserEvent) -> UserState:
    match event:
        case UserAdded(user_id=user_id, name=name):
            return UserState({**state.users, user_id: User(user_id, name)})
        case UserUpdated(user_id=user_id, name=name) if name is not None:
            return UserState({**state.users, user_id: User(user_id, name)})
    return state


users: Decider[UserCommand, UserState, UserEvent] = Decider(decide=decide, evolve=evolve, initial_state=UserState)
codec: Codec[UserEvent] = Codec([UserAdded, UserUpdated])
