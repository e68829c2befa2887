"""``UserService``: the origin design's service that calls ``execute`` for each Users command."""

from __future__ import annotations

from uuid import UUID

from epoch import CommandHandler, EventStore, ExecuteResult
from epoch.examples.users.domain import (
    DEFAULT_SERVICES,
    AddUser,
    UpdateUser,
    User,
    UserEvent,
    UserServices,
    UserState,
    codec,
    users,
)


class UserService:
    """Runs Users commands against one directory stream, ``users-{directory}``."""

    def __init__(
        self,
        store: EventStore,
        directory: str = "main",
        services: UserServices = DEFAULT_SERVICES,
        retries: int | None = None,
    ) -> None:
        self.directory = directory
        self.services = services
        # None: the handler's own default budget, so the example shows what users get.
        if retries is None:
            self.handler = CommandHandler(store, users, "users", codec)
        else:
            self.handler = CommandHandler(store, users, "users", codec, retries=retries)

    async def add_user(
        self, command: AddUser, command_id: str | UUID | None = None
    ) -> ExecuteResult[UserState, UserEvent]:
        """Add a user; raises ``DuplicateName`` if the name is taken."""
        return await self.handler.execute(self.directory, command, services=self.services, command_id=command_id)

    async def update_user(
        self, command: UpdateUser, command_id: str | UUID | None = None
    ) -> ExecuteResult[UserState, UserEvent]:
        """Rename a user; raises ``UnknownUser`` or ``DuplicateName``."""
        return await self.handler.execute(self.directory, command, services=self.services, command_id=command_id)

    async def users(self) -> dict[str, User]:
        """The directory's current users by id."""
        state, _ = await self.handler.load(self.directory)
        return state.users
