"""epoch.http in a FastAPI app (FastAPI is Starlette underneath): the same ETags, preconditions,
problem+json answers and idempotency keys as tests/test_http.py checks on the Users example's Starlette app."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from epoch import CommandHandler, open_store
from epoch.examples.users.domain import AddUser, DuplicateName, UserEvent, UserServices, UserState, codec, users
from epoch.http import etag, execute, problem_handlers

Handler = CommandHandler[AddUser, UserState, UserEvent]


class NewUser(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def create_app(handler: Handler) -> FastAPI:
    counter = itertools.count(1)
    services = UserServices(new_user_id=lambda: f"u{next(counter)}")
    app = FastAPI(exception_handlers=problem_handlers({DuplicateName: 409}))

    @app.post("/directories/{directory}/users")
    async def add(directory: str, request: Request) -> JSONResponse:
        body = msgspec.json.decode(await request.body(), type=NewUser)
        result = await execute(handler, directory, AddUser(body.name), request.headers, services=services)
        assert result.version is not None  # AddUser always writes one event
        return JSONResponse({"version": result.version}, status_code=201, headers={"ETag": etag(result.version)})

    return app


@pytest.fixture
async def http(store_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with open_store(store_url) as store:
        app = create_app(CommandHandler(store, users, "users", codec))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield client


async def test_a_fastapi_app_maps_preconditions_problems_and_idempotency(http: httpx.AsyncClient) -> None:
    first = await http.post("/directories/eu/users", json={"name": "ada"}, headers={"If-None-Match": "*"})
    assert (first.status_code, first.headers["etag"], first.json()) == (201, '"0"', {"version": 0})

    stale = await http.post("/directories/eu/users", json={"name": "grace"}, headers={"If-None-Match": "*"})
    assert (stale.status_code, stale.headers["content-type"], stale.headers["etag"]) == (
        412,
        "application/problem+json",
        '"0"',
    )
    assert stale.json()["detail"] == "users-eu: expected version NO_STREAM, actual 0"

    once = {"Idempotency-Key": "add-grace", "If-Match": '"0"'}
    added = await http.post("/directories/eu/users", json={"name": "grace"}, headers=once)
    again = await http.post("/directories/eu/users", json={"name": "grace"}, headers=once)
    assert (added.status_code, added.json(), again.status_code, again.json()) == (
        201,
        {"version": 1},
        201,
        {"version": 1},
    )

    taken = await http.post("/directories/eu/users", json={"name": "ada"})
    assert taken.status_code == 409
    assert taken.json() == {
        "type": "urn:epoch:problem:DuplicateName",
        "title": "DuplicateName",
        "status": 409,
        "detail": "a user named 'ada' already exists",
        "instance": "/directories/eu/users",
    }


def test_epoch_web_api_is_the_same_helpers() -> None:
    import epoch.http
    import epoch.web.api

    assert epoch.web.api.__all__ == epoch.http.__all__
    assert all(getattr(epoch.web.api, name) is getattr(epoch.http, name) for name in epoch.http.__all__)
