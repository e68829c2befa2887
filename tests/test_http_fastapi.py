"""epoch.http in a FastAPI app (FastAPI is Starlette underneath): the same ETags, preconditions,
problem+json answers and idempotency keys as tests/test_http.py checks on the Users example's Starlette app."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pydantic
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from epoch import Codec, CommandHandler, Decider, open_store
from epoch.examples.users.domain import AddUser, DuplicateName, UserEvent, UserServices, UserState, codec, users
from epoch.http import etag, execute, problem_handlers

Handler = CommandHandler[AddUser, UserState, UserEvent]
ROOT = Path(__file__).resolve().parent.parent


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


class Scored(pydantic.BaseModel):
    name: str
    score: int


def validating_app() -> FastAPI:
    app = FastAPI(exception_handlers=problem_handlers())

    @app.post("/scores/{id}")
    async def score(id: int, body: Scored, request: Request) -> dict[str, int]:
        return {"id": id, "score": body.score}

    return app


@pytest.mark.parametrize(
    ("url", "body", "expected"),
    [
        (
            "/scores/1",
            b'{"name": "ada", "score": "x"}',
            {
                "type": "urn:epoch:problem:invalid-body",
                "title": "Invalid request body",
                "status": 422,
                "detail": "Input should be a valid integer, unable to parse string as an integer - at `body.score`",
                "instance": "/scores/1",
                "errors": [
                    {
                        "type": "int_parsing",
                        "loc": ["body", "score"],
                        "msg": "Input should be a valid integer, unable to parse string as an integer",
                    }
                ],
            },
        ),
        (
            "/scores/1",
            b'{"name": "ada", "score": 1',
            {
                "type": "urn:epoch:problem:invalid-body",
                "title": "Invalid request body",
                "status": 422,
                "detail": "JSON decode error: Expecting ',' delimiter - at `body.26`",
                "instance": "/scores/1",
                "errors": [{"type": "json_invalid", "loc": ["body", 26], "msg": "JSON decode error"}],
            },
        ),
        (
            "/scores/x",
            b'{"name": "ada"}',
            {
                "type": "urn:epoch:problem:invalid-input",
                "title": "Invalid input",
                "status": 422,
                "detail": "Input should be a valid integer, unable to parse string as an integer - at `path.id`; "
                "Field required - at `body.score`",
                "instance": "/scores/x",
                "errors": [
                    {
                        "type": "int_parsing",
                        "loc": ["path", "id"],
                        "msg": "Input should be a valid integer, unable to parse string as an integer",
                    },
                    {"type": "missing", "loc": ["body", "score"], "msg": "Field required"},
                ],
            },
        ),
    ],
)
async def test_fastapis_own_validation_errors_are_problem_json(
    url: str, body: bytes, expected: dict[str, object]
) -> None:
    # FastAPI answers a body its pydantic model refuses with its own 422 application/json: problem_handlers
    # takes over its RequestValidationError, so every bad input is problem+json (DESIGN §8).
    transport = httpx.ASGITransport(app=validating_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(url, content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (422, "application/problem+json")
    assert response.json() == expected


def test_problem_handlers_name_fastapis_validation_error_only_where_fastapi_is() -> None:
    import fastapi.exceptions

    assert fastapi.exceptions.RequestValidationError in problem_handlers()
    script = (
        "import sys; sys.modules['fastapi'] = None\n"  # as if FastAPI were not installed
        "from epoch.http import problem_handlers\n"
        "print(sorted(c.__name__ for c in problem_handlers()))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "RequestValidationError" not in out and "UnicodeDecodeError" in out


# -- the FastAPI program of docs/http.md ------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposit:
    amount: int


@dataclass(frozen=True)
class Deposited:
    amount: int


class Overdrawn(Exception):
    pass


def decide(command: Deposit, balance: int) -> list[Deposited]:
    if balance + command.amount < 0:
        raise Overdrawn(f"a balance of {balance} cannot pay {-command.amount}")
    return [Deposited(command.amount)]


accounts = Decider(decide=decide, evolve=lambda balance, e: balance + e.amount, initial_state=0)


def docs_fastapi_block() -> str:
    """The FastAPI block of docs/http.md (the docs test does not run it: it needs the names given here)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", (ROOT / "docs" / "http.md").read_text(), re.S | re.M)
    [block] = [str(b) for b in blocks if "from fastapi import" in b]
    return block


async def test_the_fastapi_block_of_the_docs_runs(store_url: str) -> None:
    async with open_store(store_url) as store:
        handler = CommandHandler(store, accounts, "account", Codec([Deposited]))
        names: dict[str, object] = {"handler": handler, "Deposit": Deposit, "Overdrawn": Overdrawn}
        exec(compile(docs_fastapi_block(), "docs/http.md", "exec", dont_inherit=True), names)
        app = names["app"]
        assert isinstance(app, FastAPI)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank") as http:
            first = await http.post("/accounts/42/deposits", json={"amount": 10}, headers={"If-None-Match": "*"})
            assert (first.status_code, first.headers["etag"], first.json()) == (200, '"0"', {"balance": 10})
            stale = await http.post("/accounts/42/deposits", json={"amount": 5}, headers={"If-Match": '"7"'})
            assert (stale.status_code, stale.headers["etag"]) == (412, '"0"')
            refused = await http.post("/accounts/42/deposits", json={"amount": -100})
            assert (refused.status_code, refused.headers["content-type"]) == (409, "application/problem+json")
            assert refused.json()["detail"] == "a balance of 10 cannot pay 100"
            bad = await http.post("/accounts/42/deposits", json={"amount": "ten"})
            assert (bad.status_code, bad.headers["content-type"]) == (422, "application/problem+json")
            assert bad.json()["detail"] == (
                "Input should be a valid integer, unable to parse string as an integer - at `body.amount`"
            )


def test_epoch_web_api_is_the_same_helpers() -> None:
    import epoch.http
    import epoch.web.api

    assert epoch.web.api.__all__ == epoch.http.__all__
    assert all(getattr(epoch.web.api, name) is getattr(epoch.http, name) for name in epoch.http.__all__)
