"""The Users context's unique-name rule as one decision across per-user streams (no registry saga).

Each user has a stream of its own, ``user-{id}``. A name is unique across all of them because the
decision that takes a name reads every event that ever mentioned it (tagged ``username:{name}``) and
appends only if none was recorded since: of two registrations of ``ada`` racing, exactly one appends, and
the other decides again, sees ``ada`` taken and raises :class:`DuplicateName`. Compare
:mod:`epoch.examples.users.registry`, which keeps the rule with a name stream and a process manager.

Tags (``tags_of``): every event carries ``user:{id}``; a registration ``username:{name}``; a rename both
the old and the new name, so the old name reads as free again. The decision's query
(:func:`name_query`) selects the user's own events and the name's: what the rule needs, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from epoch import Codec, Decider, DecisionHandler, EventStore, Query, QueryItem
from epoch.examples.users.domain import DuplicateName, UnknownUser, UserError


# -- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RegisterUser:
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class RenameUser:
    user_id: str
    name: str


NameCommand = RegisterUser | RenameUser


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserRegistered:
    user_id: str
    name: str


@dataclass(frozen=True, slots=True)
class UserRenamed:
    user_id: str
    old_name: str
    name: str


NameEvent = UserRegistered | UserRenamed


class AlreadyRegistered(UserError):
    def __init__(self, user_id: str, name: str) -> None:
        super().__init__(f"user {user_id!r} is already registered as {name!r}")
        self.user_id = user_id
        self.name = name


# -- state: what the events read say about the names and users they mention -------------------
@dataclass(frozen=True, slots=True)
class Names:
    owners: dict[str, str] = field(default_factory=dict)  # name -> the user id holding it
    names: dict[str, str] = field(default_factory=dict)  # user id -> its current name


def decide(command: NameCommand, state: Names) -> list[NameEvent]:
    current = state.names.get(command.user_id)
    owner = state.owners.get(command.name)
    match command:
        case RegisterUser(user_id=user_id, name=name):
            if current is not None:
                if current == name:
                    return []  # registered as asked already
                raise AlreadyRegistered(user_id, current)
            if owner is not None:
                raise DuplicateName(name)
            return [UserRegistered(user_id, name)]
        case RenameUser(user_id=user_id, name=name):
            if current is None:
                raise UnknownUser(user_id)
            if current == name:
                return []
            if owner is not None:
                raise DuplicateName(name)
            return [UserRenamed(user_id, current, name)]
    raise TypeError(f"not a name command: {command!r}")


def evolve(state: Names, event: NameEvent) -> Names:
    owners = dict(state.owners)
    match event:
        case UserRenamed(user_id=user_id, old_name=old):
            if owners.get(old) == user_id:
                del owners[old]
    owners[event.name] = event.user_id
    return Names(owners, {**state.names, event.user_id: event.name})


names: Decider[NameCommand, Names, NameEvent] = Decider(decide=decide, evolve=evolve, initial_state=Names)
codec: Codec[NameEvent] = Codec([UserRegistered, UserRenamed])


def tags_of(event: NameEvent) -> tuple[str, ...]:
    """The tags the decisions' queries select by: the user, and every name the event mentions."""
    if isinstance(event, UserRenamed):
        return (f"user:{event.user_id}", f"username:{event.old_name}", f"username:{event.name}")
    return (f"user:{event.user_id}", f"username:{event.name}")


def name_query(command: NameCommand) -> Query:
    """The consistency boundary of one name command: the user's events and the wanted name's."""
    return Query([QueryItem(tags=(f"user:{command.user_id}",)), QueryItem(tags=(f"username:{command.name}",))])


def user_stream(command: NameCommand) -> str:
    return f"user-{command.user_id}"


def names_handler(store: EventStore, retries: int = 20) -> DecisionHandler[NameCommand, Names, NameEvent]:
    """Runs :class:`RegisterUser` and :class:`RenameUser` on ``user-{id}``, names unique across users."""
    return DecisionHandler(store, names, codec, query=name_query, stream=user_stream, retries=retries, tags=tags_of)
