"""A name registry across user directories: one stream per name, ``usernames-{name}``, owns it.

Users live in directory streams (``users-eu``, ``users-us``); a directory's decider keeps names unique
inside it, but two directories could both accept ``ada``. The registry makes names unique everywhere:

- :class:`RegisteredUsers` reserves the name first (optimistic concurrency on the name's stream makes
  exactly one of two racing reservations win; the other raises :class:`NameTaken`), then adds the user.
- :data:`name_claims` is a process manager for users added or renamed without the service: it reacts to
  ``UserAdded``/``UserUpdated`` with ``ReserveName``; a clash is parked for an operator to resolve.
  Reserving again for the same owner is a no-op, so both paths agree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from uuid import UUID

from epoch import Codec, CommandHandler, Decider, EventStore, ExecuteResult, Saga
from epoch.examples.users.domain import AddUser, UserAdded, UserEvent, UserServices, UserState, UserUpdated
from epoch.examples.users.domain import codec as users_codec
from epoch.examples.users.service import UserService
from epoch.projections.sagas import SagaRunner


@dataclass(frozen=True, slots=True)
class ReserveName:
    name: str
    owner: str


@dataclass(frozen=True, slots=True)
class NameReserved:
    name: str
    owner: str


class NameTaken(Exception):
    """The name belongs to someone else."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"the name {name!r} is taken by {owner}")
        self.name = name
        self.owner = owner


def decide(command: ReserveName, owner: str | None) -> list[NameReserved]:
    if owner is None:
        return [NameReserved(command.name, command.owner)]
    if owner == command.owner:
        return []  # already ours
    raise NameTaken(command.name, owner)


def evolve(owner: str | None, event: NameReserved) -> str | None:
    return event.owner


registry: Decider[ReserveName, str | None, NameReserved] = Decider(decide=decide, evolve=evolve, initial_state=None)
registry_codec: Codec[NameReserved] = Codec([NameReserved])


def registry_handler(store: EventStore) -> CommandHandler[ReserveName, str | None, NameReserved]:
    """Runs ``ReserveName`` on ``usernames-{name}``."""
    return CommandHandler(store, registry, "usernames", registry_codec)


class RegisteredUsers:
    """Adds users to any directory with names unique across all of them."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.names = registry_handler(store)

    async def add_user(
        self, directory: str, name: str, command_id: UUID | None = None
    ) -> ExecuteResult[UserState, UserEvent]:
        """Reserve ``name`` for a new user id, then add the user; raises :class:`NameTaken`.

        With a ``command_id`` the whole call is idempotent (the user id derives from it).
        """
        command_id = command_id or uuid.uuid4()
        user_id = uuid.uuid5(command_id, "user").hex[:12]
        await self.names.execute(name, ReserveName(name, user_id), command_id=uuid.uuid5(command_id, "reserve"))
        service = UserService(self.store, directory, services=UserServices(new_user_id=lambda: user_id))
        return await service.add_user(AddUser(name), command_id=uuid.uuid5(command_id, "add"))


def _claims(event: UserEvent) -> list[ReserveName]:
    match event:
        case UserAdded(user_id=user_id, name=name) | UserUpdated(user_id=user_id, name=str(name)):
            return [ReserveName(name, user_id)]
    return []


name_claims: Saga[UserEvent, ReserveName] = Saga(_claims)
"""UserAdded/UserUpdated -> ReserveName(name, owner=user id)."""


def name_claims_runner(store: EventStore) -> SagaRunner[UserEvent, ReserveName]:
    """The process manager that keeps the registry in step with every directory (clashes are parked)."""
    names = registry_handler(store)
    return SagaRunner(
        store,
        users_codec,
        name_claims,
        lambda command: (names, command.name),
        name="user-name-claims",
        categories="users",
        policy="park",
    )
