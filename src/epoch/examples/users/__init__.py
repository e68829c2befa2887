"""The origin design's Users context as an epoch decider, and a service that runs its commands."""

from epoch.examples.users.domain import (
    AddUser,
    DuplicateName,
    UnknownUser,
    UpdateUser,
    User,
    UserAdded,
    UserCommand,
    UserError,
    UserEvent,
    UserServices,
    UserState,
    UserUpdated,
    codec,
    users,
)
from epoch.examples.users.service import UserService

__all__ = [
    "AddUser",
    "DuplicateName",
    "UnknownUser",
    "UpdateUser",
    "User",
    "UserAdded",
    "UserCommand",
    "UserError",
    "UserEvent",
    "UserService",
    "UserServices",
    "UserState",
    "UserUpdated",
    "codec",
    "users",
]
