"""The Users context over HTTP: a Starlette app (``epoch demo --http`` serves it; FastAPI would do the same).

Each directory is one stream, ``users-{directory}``, and its version is the ETag of every resource in it:

- ``GET /directories/{directory}`` — the users (304 when ``If-None-Match`` names the version);
- ``GET /directories/{directory}/users/{user_id}`` — one user;
- ``POST /directories/{directory}/users`` ``{"name": ...}`` — add a user (201 with ``Location``);
- ``PATCH /directories/{directory}/users/{user_id}`` ``{"name": ...}`` — rename a user.

Writes take ``If-Match`` (412 when the directory moved on), ``If-None-Match: *`` (create the directory
only) and ``Idempotency-Key`` (sent again, the same response; sent with another kind of request, or for
another user, 422). Errors are problem+json: a taken name is 409, an unknown user 404, a bad body or
directory name 422. ``Location`` percent-encodes the directory and the user id, each one path segment
(a ``/`` in it is ``%2F``), and the routes match the path as sent, so any id can be followed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote, unquote

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from epoch import CommandHandler, EventStore, open_store
from epoch.examples.users.domain import AddUser as AddUserCommand
from epoch.examples.users.domain import (
    DuplicateName,
    UnknownUser,
    UpdateUser,
    User,
    UserAdded,
    UserEvent,
    UserServices,
    UserState,
    UserUpdated,
    codec,
    users,
)
from epoch.http import Problem, command_id_from, etag, execute, not_modified, problem_handlers

__all__ = ["DOMAIN_ERRORS", "KeyReused", "create_app"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewUser(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class Rename(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class KeyReused(Exception):
    """An ``Idempotency-Key`` sent again with another kind of request, or for another user: the result the
    key stands for (its first execution's) does not answer this request. (The same request with another
    body gets the first response: the key wins.)"""

    def __init__(self, key: str | None, stream: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was first sent with another request to {stream}")
        self.key = key
        self.stream = stream


DOMAIN_ERRORS: dict[type[BaseException], int | Problem] = {
    DuplicateName: 409,
    UnknownUser: Problem(404, title="Unknown user"),
    KeyReused: Problem(
        422, type="urn:epoch:problem:idempotency-key-reused", title="Idempotency-Key reused for a different request"
    ),
}
"""How the decider's refusals (and a reused idempotency key) are answered."""


def _segment(text: str) -> str:
    """``text`` as one path segment: percent-encoded (UTF-8), and a dot segment's dots too, which a client
    would otherwise resolve as in a file path (``..`` takes away the segment before it)."""
    encoded = quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _sent_path(scope: Scope) -> str | None:
    """The route path (the path less ``root_path``) as sent, still percent-encoded; ``None`` when the server
    gave no ``raw_path``, or it is not the path decoded (rewritten by a middleware)."""
    raw = scope.get("raw_path")
    if not raw:
        return None
    sent: str = raw.decode("latin-1")
    if unquote(sent) != scope["path"]:
        return None
    root = scope.get("root_path", "")
    if not root:
        return sent
    prefix = ""
    for part in sent.split("/")[1:]:  # the sent segments that decode to the root path
        prefix += "/" + part
        if unquote(prefix) == root:
            return sent[len(prefix) :]
    return None


class _SentPathRoute(Route):
    """A route matched on the path as sent, each parameter percent-decoded after the match.

    Starlette matches the decoded path, where an id's ``%2F`` is a ``/`` already: ``{directory}`` (which
    stops at a ``/``) would not match the directory ``a/b``, nor ``{user_id}`` the user ``u/1``. In the
    path as sent (ASGI's ``raw_path``) each parameter is one segment, whatever it holds.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        sent = _sent_path(scope) if scope["type"] == "http" else None
        if sent is None:
            return super().matches(scope)
        match, child = super().matches({**scope, "path": sent, "root_path": ""})
        if match is not Match.NONE:
            params: dict[str, Any] = child["path_params"]
            child["path_params"] = {**params, **{name: unquote(params[name]) for name in self.param_convertors}}
        return match, child


def _json(body: object, status: int, version: int | None, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if version is not None:
        headers["ETag"] = etag(version)
    return Response(msgspec.json.encode(body), status, headers=headers, media_type="application/json")


def _user(user: User) -> dict[str, str]:
    return {"user_id": user.user_id, "name": user.name}


class UsersAPI:
    """The routes over one store; ``services`` gives ``decide`` its id generator."""

    def __init__(self, services: UserServices) -> None:
        self.services = services
        self.handler: CommandHandler[AddUserCommand | UpdateUser, UserState, UserEvent] | None = None

    def _handler(self) -> CommandHandler[AddUserCommand | UpdateUser, UserState, UserEvent]:
        assert self.handler is not None, "the app's store is opened by its lifespan"
        return self.handler

    async def directory(self, request: Request) -> Response:
        directory = request.path_params["directory"]
        state, version = await self._handler().load(directory)
        if version is None:
            raise HTTPException(404, f"no directory {directory!r}")
        if not_modified(request.headers, version):
            return Response(status_code=304, headers={"ETag": etag(version)})
        listed = [_user(u) for u in sorted(state.users.values(), key=lambda u: u.name)]
        return _json({"directory": directory, "version": version, "users": listed}, 200, version)

    async def user(self, request: Request) -> Response:
        directory, user_id = request.path_params["directory"], request.path_params["user_id"]
        state, version = await self._handler().load(directory)
        found = state.users.get(user_id)
        if found is None:
            raise UnknownUser(user_id)
        if not_modified(request.headers, version):
            return Response(status_code=304, headers={"ETag": etag(version)} if version is not None else {})
        return _json(_user(found), 200, version)

    async def add(self, request: Request) -> Response:
        directory = request.path_params["directory"]
        body = msgspec.json.decode(await request.body(), type=NewUser)
        result = await execute(
            self._handler(), directory, AddUserCommand(body.name), request.headers, services=self.services
        )
        # AddUser decides one UserAdded; a key whose first request was a rename brings back its events.
        added = result.events[0].data if len(result.events) == 1 else None
        if not isinstance(added, UserAdded):
            raise KeyReused(command_id_from(request.headers), result.stream)
        user_id = added.user_id
        # A header is Latin-1 on the wire: the path's segments go percent-encoded (UTF-8), as in a URL.
        location = {"Location": f"/directories/{_segment(directory)}/users/{_segment(user_id)}"}
        return _json({**_user(result.state.users[user_id]), "version": result.version}, 201, result.version, location)

    async def rename(self, request: Request) -> Response:
        directory, user_id = request.path_params["directory"], request.path_params["user_id"]
        body = msgspec.json.decode(await request.body(), type=Rename)
        result = await execute(
            self._handler(), directory, UpdateUser(user_id, body.name), request.headers, services=self.services
        )
        # Nothing to change, or this user's rename; a key first sent to add a user, or to rename another,
        # brings back that request's events (and a state this user may not even be in).
        if any(not (isinstance(e.data, UserUpdated) and e.data.user_id == user_id) for e in result.events):
            raise KeyReused(command_id_from(request.headers), result.stream)
        return _json({**_user(result.state.users[user_id]), "version": result.version}, 200, result.version)


def create_app(store: str | EventStore | None = None, services: UserServices | None = None) -> Starlette:
    """The Users HTTP API over ``store``: a URL (opened when the app starts, closed when it stops; the
    default store without one) or an open store, which stays the caller's."""
    api = UsersAPI(services or UserServices())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if isinstance(store, str) or store is None:
            async with open_store(store) as opened:
                api.handler = CommandHandler(opened, users, "users", codec)
                yield
        else:
            yield

    if not (isinstance(store, str) or store is None):
        api.handler = CommandHandler(store, users, "users", codec)  # usable without a lifespan (ASGI tests)
    routes = [
        _SentPathRoute("/directories/{directory}", api.directory, methods=["GET"]),
        _SentPathRoute("/directories/{directory}/users", api.add, methods=["POST"]),
        _SentPathRoute("/directories/{directory}/users/{user_id}", api.user, methods=["GET"]),
        _SentPathRoute("/directories/{directory}/users/{user_id}", api.rename, methods=["PATCH"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=problem_handlers(DOMAIN_ERRORS))
