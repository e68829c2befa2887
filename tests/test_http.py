"""The HTTP helpers and the Users HTTP API, over httpx against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.datastructures import Headers as StarletteHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epoch import ANY, NO_STREAM, STREAM_EXISTS, EventStore, StoreUnavailable, StreamClosed, StreamDeleted, open_store
from epoch.examples.users import UserServices
from epoch.examples.users.http import create_app
from epoch.http import (
    PreconditionError,
    command_id_from,
    etag,
    expected_version_from,
    not_modified,
    problem_handlers,
)
from tests.hostile import is_valid_name
from tests.serving import free_port, serving

PROBLEM = "application/problem+json"


def ids() -> UserServices:
    counter = itertools.count(1)
    return UserServices(new_user_id=lambda: f"u{next(counter)}")


@dataclass
class API:
    http: httpx.AsyncClient
    store: EventStore

    async def add(self, name: str, directory: str = "eu", **headers: str) -> httpx.Response:
        return await self.http.post(f"/directories/{directory}/users", json={"name": name}, headers=headers)

    async def events(self, directory: str = "eu") -> list[str]:
        return [e.type async for e in self.store.read_stream(f"users-{directory}")]


@pytest.fixture
async def api(sql_store_url: str) -> AsyncIterator[API]:
    async with open_store(sql_store_url) as store:
        app = create_app(store, ids())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield API(http, store)


def problem_of(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"] == PROBLEM
    body = json.loads(response.content)
    assert isinstance(body, dict)
    return body


# --- the Users API --------------------------------------------------------------------------------


async def test_a_write_answers_with_the_new_version_as_etag_and_a_read_too(api: API) -> None:
    added = await api.add("ada")
    assert (added.status_code, added.headers["etag"], added.headers["location"]) == (
        201,
        '"0"',
        "/directories/eu/users/u1",
    )
    assert added.json() == {"user_id": "u1", "name": "ada", "version": 0}
    read = await api.http.get("/directories/eu")
    assert (read.status_code, read.headers["etag"]) == (200, '"0"')
    assert read.json() == {"directory": "eu", "version": 0, "users": [{"user_id": "u1", "name": "ada"}]}
    one = await api.http.get("/directories/eu/users/u1")
    assert (one.status_code, one.headers["etag"], one.json()) == (200, '"0"', {"user_id": "u1", "name": "ada"})
    cached = await api.http.get("/directories/eu", headers={"If-None-Match": '"0"'})
    assert (cached.status_code, cached.headers["etag"], cached.content) == (304, '"0"', b"")
    moved = await api.http.get("/directories/eu", headers={"If-None-Match": '"7", W/"9"'})
    assert moved.status_code == 200


async def test_if_match_with_the_current_version_writes(api: API) -> None:
    await api.add("ada")
    renamed = await api.http.patch("/directories/eu/users/u1", json={"name": "ada l"}, headers={"If-Match": '"0"'})
    assert (renamed.status_code, renamed.headers["etag"]) == (200, '"1"')
    assert renamed.json() == {"user_id": "u1", "name": "ada l", "version": 1}
    weak = await api.add("grace", **{"If-Match": 'W/"1"'})  # a proxy may have weakened the tag
    assert (weak.status_code, weak.headers["etag"]) == (201, '"2"')


async def test_a_stale_if_match_is_412_with_the_current_etag_and_writes_nothing(api: API) -> None:
    await api.add("ada")
    await api.add("grace")
    stale = await api.add("linus", **{"If-Match": '"0"'})
    assert (stale.status_code, stale.headers["etag"]) == (412, '"1"')
    assert problem_of(stale) == {
        "type": "urn:epoch:problem:wrong-expected-version",
        "title": "Precondition Failed",
        "status": 412,
        "detail": "users-eu: expected version 0, actual 1",
        "instance": "/directories/eu/users",
        "stream": "users-eu",
        "expected": 0,
        "actual": 1,
    }
    assert await api.events() == ["UserAdded", "UserAdded"]


async def test_if_none_match_star_creates_only_and_if_match_star_needs_the_stream(api: API) -> None:
    missing = await api.add("ada", **{"If-Match": "*"})
    assert missing.status_code == 412
    assert "etag" not in missing.headers  # there is no version to name
    assert problem_of(missing)["detail"] == "users-eu: expected version STREAM_EXISTS, actual no stream"
    created = await api.add("ada", **{"If-None-Match": "*"})
    assert (created.status_code, created.headers["etag"]) == (201, '"0"')
    again = await api.add("grace", **{"If-None-Match": "*"})
    assert (again.status_code, again.headers["etag"]) == (412, '"0"')
    assert problem_of(again)["detail"] == "users-eu: expected version NO_STREAM, actual 0"
    exists = await api.add("grace", **{"If-Match": "*"})
    assert (exists.status_code, exists.headers["etag"]) == (201, '"1"')


async def test_an_idempotency_key_sent_again_gets_the_same_response(api: API) -> None:
    first = await api.add("ada", **{"Idempotency-Key": "add-ada-1"})
    await api.add("grace")
    again = await api.add("ada", **{"Idempotency-Key": "add-ada-1"})
    assert (again.status_code, again.headers["etag"], again.headers["location"], again.content) == (
        first.status_code,
        first.headers["etag"],
        first.headers["location"],
        first.content,
    )
    assert first.json() == {"user_id": "u1", "name": "ada", "version": 0}
    assert await api.events() == ["UserAdded", "UserAdded"]


@pytest.mark.parametrize(
    "headers", [{}, {"If-None-Match": "*"}, {"If-Match": '"1"'}, {"If-Match": '"0"'}, {"If-Match": "*"}]
)
async def test_a_hard_deleted_directory_is_410_whatever_the_precondition(api: API, headers: dict[str, str]) -> None:
    await api.add("ada")
    await api.add("bob")
    await api.store.delete_stream("users-eu", hard=True)
    response = await api.add("cy", **headers)
    assert (response.status_code, problem_of(response)) == (
        410,
        {
            "type": "urn:epoch:problem:stream-deleted",
            "title": "Stream deleted",
            "status": 410,
            "detail": "users-eu: the stream is deleted (last version 1)",
            "instance": "/directories/eu/users",
            "stream": "users-eu",
        },
    )
    renamed = await api.http.patch("/directories/eu/users/u1", json={"name": "x"}, headers=headers)
    assert (renamed.status_code, problem_of(renamed)["title"]) == (410, "Stream deleted")


def reused(instance: str) -> dict[str, object]:
    return {
        "type": "urn:epoch:problem:idempotency-key-reused",
        "title": "Idempotency-Key reused for a different request",
        "status": 422,
        "detail": "Idempotency-Key 'K' was first sent with another request to users-eu",
        "instance": instance,
    }


async def test_an_idempotency_key_reused_for_another_request_is_422(api: API) -> None:
    key = {"Idempotency-Key": "K"}
    first = await api.add("ada", **key)
    await api.add("bob")
    # The key's result is u1's addition: neither a rename of u2 (not even in its state) nor of u1.
    other_user = await api.http.patch("/directories/eu/users/u2", json={"name": "robert"}, headers=key)
    assert (other_user.status_code, problem_of(other_user)) == (422, reused("/directories/eu/users/u2"))
    same_user = await api.http.patch("/directories/eu/users/u1", json={"name": "adele"}, headers=key)
    assert (same_user.status_code, problem_of(same_user)) == (422, reused("/directories/eu/users/u1"))
    # The same request with another body: the key wins, as documented (the first response again).
    again = await api.add("ann", **key)
    assert (again.status_code, again.content) == (201, first.content)

    renamed = await api.http.patch("/directories/eu/users/u2", json={"name": "rob"}, headers={"Idempotency-Key": "R"})
    assert renamed.status_code == 200
    add = await api.http.post("/directories/eu/users", json={"name": "cy"}, headers={"Idempotency-Key": "R"})
    assert (add.status_code, problem_of(add)["detail"]) == (
        422,
        "Idempotency-Key 'R' was first sent with another request to users-eu",
    )
    rename_u1 = await api.http.patch("/directories/eu/users/u1", json={"name": "rob"}, headers={"Idempotency-Key": "R"})
    assert (rename_u1.status_code, problem_of(rename_u1)["title"]) == (
        422,
        "Idempotency-Key reused for a different request",
    )
    same = await api.http.patch("/directories/eu/users/u2", json={"name": "x"}, headers={"Idempotency-Key": "R"})
    assert (same.status_code, same.content) == (200, renamed.content)
    assert await api.events() == ["UserAdded", "UserAdded", "UserUpdated"]


async def test_a_location_is_percent_encoded(api: API) -> None:
    added = await api.http.post("/directories/%E6%97%A5%E6%9C%AC/users", json={"name": "ada"})  # 日本
    assert (added.status_code, added.headers["location"]) == (201, "/directories/%E6%97%A5%E6%9C%AC/users/u1")
    assert (await api.http.get(added.headers["location"])).json() == {"user_id": "u1", "name": "ada"}
    assert await api.events("日本") == ["UserAdded"]
    latin = await api.http.post("/directories/caf%C3%A9 %3F/users", json={"name": "ada"})
    assert (latin.status_code, latin.headers["location"]) == (201, "/directories/caf%C3%A9%20%3F/users/u2")


async def test_a_user_id_is_percent_encoded_in_the_location(sql_store_url: str) -> None:
    async with open_store(sql_store_url) as store:
        app = create_app(store, UserServices(new_user_id=lambda: "ü 1?"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            added = await http.post("/directories/eu/users", json={"name": "ada"})
            assert (added.status_code, added.headers["location"]) == (201, "/directories/eu/users/%C3%BC%201%3F")
            assert (await http.get(added.headers["location"])).json() == {"user_id": "ü 1?", "name": "ada"}


def segment(text: str) -> str:
    """A path segment naming ``text``: percent-encoded (UTF-8), a dot segment's dots too (a client would
    resolve ``.`` and ``..`` as in a file path, and take away a segment)."""
    encoded = quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


# A directory makes a stream name (users-{directory}); a user id is any text. Both may hold '/', '%',
# spaces, dots and any non-ASCII character, each of which a path segment must carry percent-encoded.
_ID_CHARS = st.one_of(st.sampled_from(["/", "%", " ", ".", "?", "#", "+", "é", "日", "\U0001d518"]), st.characters())
directories = st.text(_ID_CHARS, min_size=1, max_size=20).filter(lambda d: is_valid_name(f"users-{d}"))
user_ids = st.text(st.characters(exclude_categories=["Cs"]) | _ID_CHARS, min_size=1, max_size=20)


@given(directory=directories, user_id=user_ids)
@example(directory="a/b", user_id="u/1")
@example(directory="%", user_id="%2F")
@example(directory="a b", user_id="ü 1?")
@example(directory="日本/語", user_id="/")
@example(directory="/", user_id="a//b/")
@example(directory=".", user_id="..")
@example(directory="..", user_id=".")
@example(directory="a%2Fb", user_id="x/../y")
async def test_the_location_of_any_directory_and_user_id_can_be_followed(directory: str, user_id: str) -> None:
    """Each id in one path segment, percent-encoded: routed on the path as sent (where an id's '/' is still
    %2F), the Location of a new user, and its directory, answer for that user and that directory."""
    async with open_store("memory://") as store:
        app = create_app(store, UserServices(new_user_id=lambda: user_id))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            added = await http.post(f"/directories/{segment(directory)}/users", json={"name": "ada"})
            location = f"/directories/{segment(directory)}/users/{segment(user_id)}"
            assert (added.status_code, added.headers["location"]) == (201, location)
            found = await http.get(added.headers["location"])
            assert (found.status_code, found.json()) == (200, {"user_id": user_id, "name": "ada"})
            renamed = await http.patch(location, json={"name": "ada l"}, headers={"If-Match": '"0"'})
            assert (renamed.status_code, renamed.json()) == (200, {"user_id": user_id, "name": "ada l", "version": 1})
            listed = await http.get(f"/directories/{segment(directory)}")
            assert (listed.status_code, listed.json()) == (
                200,
                {"directory": directory, "version": 1, "users": [{"user_id": user_id, "name": "ada l"}]},
            )
        assert [(e.stream, e.type) async for e in store.read_all()] == [
            (f"users-{directory}", "UserAdded"),
            (f"users-{directory}", "UserUpdated"),
        ]


async def test_the_deciders_refusals_are_answered_from_the_table(api: API) -> None:
    await api.add("ada")
    taken = await api.add("ada")
    assert taken.status_code == 409
    assert problem_of(taken) == {
        "type": "urn:epoch:problem:DuplicateName",
        "title": "DuplicateName",
        "status": 409,
        "detail": "a user named 'ada' already exists",
        "instance": "/directories/eu/users",
    }
    unknown = await api.http.patch("/directories/eu/users/nobody", json={"name": "x"})
    assert problem_of(unknown) == {
        "type": "urn:epoch:problem:UnknownUser",
        "title": "Unknown user",
        "status": 404,
        "detail": "unknown user 'nobody'",
        "instance": "/directories/eu/users/nobody",
    }
    no_directory = await api.http.get("/directories/nowhere")
    assert problem_of(no_directory) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no directory 'nowhere'",
        "instance": "/directories/nowhere",
    }
    assert await api.events() == ["UserAdded"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"name": 5}', "Expected `str`, got `int` - at `$.name`"),
        (b'{"name": ""}', "Expected `str` of length >= 1 - at `$.name`"),
        (b'{"name": "ada", "admin": true}', "Object contains unknown field `admin`"),
        (b'{"name": "ada"', "Input data was truncated"),
        (b"\xff", "JSON is malformed: invalid character (byte 0)"),
        # Bytes that are not UTF-8 inside a string: msgspec raises UnicodeDecodeError, not a DecodeError.
        (b'{"name": "\xff\xfe"}', "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        (b'{"name": "ok\xc3"}', "'utf-8' codec can't decode byte 0xc3 in position 2: unexpected end of data"),
        (b'{"\xff": 1}', "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
async def test_a_body_that_does_not_decode_is_422(api: API, body: bytes, detail: str) -> None:
    response = await api.http.post("/directories/eu/users", content=body)
    assert problem_of(response) == {
        "type": "urn:epoch:problem:invalid-body",
        "title": "Invalid request body",
        "status": 422,
        "detail": detail,
        "instance": "/directories/eu/users",
    }
    assert await api.events() == []


async def test_a_directory_name_that_is_no_stream_name_is_422(api: API) -> None:
    response = await api.add("ada", directory="%01x")
    assert problem_of(response) == {
        "type": "urn:epoch:problem:invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "invalid stream name 'users-\\x01x': contains a control character",
        "instance": "/directories/\x01x/users",
    }


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"If-Match": "3"}, "If-Match: not a list of entity tags: '3'"),
        ({"If-Match": '"v3"'}, 'If-Match: "v3" is not a stream version'),
        ({"If-Match": '"1", "2"'}, "If-Match: give one entity tag, not several"),
        ({"If-Match": '"1"', "If-None-Match": "*"}, "If-Match and If-None-Match together"),
        ({"If-None-Match": '"1"'}, "If-None-Match on a write must be *"),
        # Only the digits etag() writes name a version: "007" is another entity tag than "7".
        ({"If-Match": '"00000000000000000000"'}, 'If-Match: "00000000000000000000" is not a stream version'),
        ({"If-Match": '"01"'}, 'If-Match: "01" is not a stream version'),
        # A header sent on several lines is one comma-separated list (RFC 9110 section 5.3).
        ([("If-Match", '"0"'), ("If-Match", '"1"')], "If-Match: give one entity tag, not several"),
        ([("If-None-Match", "*"), ("If-None-Match", '"7"')], "If-None-Match on a write must be *"),
        ([("If-Match", "*"), ("If-Match", "*")], "If-Match: not a list of entity tags: '*, *'"),
        ([("If-None-Match", "*"), ("If-Match", '"0"'), ("If-Match", '"0"')], "If-Match and If-None-Match together"),
    ],
)
async def test_a_precondition_that_cannot_be_used_is_400(
    api: API, headers: dict[str, str] | list[tuple[str, str]], detail: str
) -> None:
    response = await api.http.post("/directories/eu/users", json={"name": "ada"}, headers=headers)
    assert problem_of(response) == {
        "type": "urn:epoch:problem:precondition",
        "title": "Malformed precondition",
        "status": 400,
        "detail": detail,
        "instance": "/directories/eu/users",
    }
    assert await api.events() == []


async def test_an_idempotency_key_on_several_lines_is_400(api: API) -> None:
    twice = [("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-1")]
    response = await api.http.post("/directories/eu/users", json={"name": "ada"}, headers=twice)
    assert problem_of(response) == {
        "type": "urn:epoch:problem:precondition",
        "title": "Malformed Idempotency-Key",
        "status": 400,
        "detail": "Idempotency-Key: give one key, not several",
        "instance": "/directories/eu/users",
    }
    assert await api.events() == []


async def test_if_none_match_on_several_lines_is_one_list_on_a_read(api: API) -> None:
    await api.add("ada")
    cached = await api.http.get("/directories/eu", headers=[("If-None-Match", '"7"'), ("If-None-Match", '"0"')])
    assert (cached.status_code, cached.headers["etag"]) == (304, '"0"')
    moved = await api.http.get("/directories/eu", headers=[("If-None-Match", '"7"'), ("If-None-Match", '"9"')])
    assert moved.status_code == 200


# --- the helpers on their own ---------------------------------------------------------------------


def test_preconditions_map_to_expected_versions() -> None:
    assert etag(12) == '"12"'
    assert expected_version_from({"if-match": '"12"'}) == 12
    assert expected_version_from({"if-match": " * "}) is STREAM_EXISTS
    assert expected_version_from({"if-none-match": "*"}) is NO_STREAM
    assert expected_version_from({}) is ANY
    assert expected_version_from({}, missing=NO_STREAM) is NO_STREAM
    with pytest.raises(PreconditionError) as raised:
        expected_version_from({}, required=True)
    assert (raised.value.status, raised.value.title, str(raised.value)) == (
        428,
        "Precondition Required",
        "this request needs an If-Match header",
    )
    with pytest.raises(PreconditionError) as too_big:
        expected_version_from({"if-match": '"123456789012345678901"'})
    assert str(too_big.value) == 'If-Match: "123456789012345678901" is not a stream version'
    assert expected_version_from({"if-match": '"0"'}) == 0
    assert expected_version_from({"if-match": '"18446744073709551615"'}) == 2**64 - 1
    for padded in ('"00"', '"007"', '"00000000000000000002"', 'W/"01"'):
        with pytest.raises(PreconditionError) as zeros:
            expected_version_from({"if-match": padded})
        tag = padded.removeprefix("W/")
        assert (zeros.value.status, str(zeros.value)) == (400, f"If-Match: {tag} is not a stream version")
    assert not not_modified({"if-none-match": '"007"'}, 7)
    assert not_modified({"if-none-match": "*"}, 0)
    assert not not_modified({"if-none-match": "*"}, None)
    assert not not_modified({"if-none-match": "garbage"}, 3)
    assert command_id_from({"idempotency-key": " k-1 "}) == "k-1"
    # Starlette's headers keep every line of a header: a list, compared as the one comma-joined line.
    lines = StarletteHeaders(raw=[(b"if-match", b'"1"'), (b"if-match", b'"2"'), (b"idempotency-key", b"k")])
    with pytest.raises(PreconditionError) as several:
        expected_version_from(lines)
    assert (several.value.status, str(several.value)) == (400, "If-Match: give one entity tag, not several")
    assert command_id_from(lines) == "k"
    assert expected_version_from(StarletteHeaders(raw=[(b"if-match", b'"4"')])) == 4
    assert not_modified(StarletteHeaders(raw=[(b"if-none-match", b'"1"'), (b"if-none-match", b'W/"3"')]), 3)
    with pytest.raises(PreconditionError) as keys:
        command_id_from(StarletteHeaders(raw=[(b"idempotency-key", b"a"), (b"idempotency-key", b"b")]))
    assert (keys.value.status, keys.value.title, str(keys.value)) == (
        400,
        "Malformed Idempotency-Key",
        "Idempotency-Key: give one key, not several",
    )
    assert command_id_from({}) is None
    for bad in ("", "a b", "é", "x" * 256):
        with pytest.raises(PreconditionError) as key:
            command_id_from({"idempotency-key": bad})
        assert (key.value.status, str(key.value)) == (400, "Idempotency-Key must be 1-255 visible ASCII characters")


def raising(error: Exception) -> Starlette:
    async def endpoint(request: Request) -> Response:
        raise error

    return Starlette(routes=[Route("/x", endpoint)], exception_handlers=problem_handlers())


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        (
            StreamClosed("orders-1", 4),
            409,
            {
                "type": "urn:epoch:problem:stream-closed",
                "title": "Stream closed",
                "status": 409,
                "detail": "orders-1: the stream is closed at version 4",
                "instance": "/x",
                "stream": "orders-1",
            },
        ),
        (
            StreamDeleted("orders-1", 4),
            410,
            {
                "type": "urn:epoch:problem:stream-deleted",
                "title": "Stream deleted",
                "status": 410,
                "detail": "orders-1: the stream is deleted (last version 4)",
                "instance": "/x",
                "stream": "orders-1",
            },
        ),
        (
            StoreUnavailable("connection lost"),
            503,
            {
                "type": "urn:epoch:problem:store-unavailable",
                "title": "Store unavailable",
                "status": 503,
                "detail": "connection lost",
                "instance": "/x",
            },
        ),
    ],
)
async def test_stream_and_store_errors_have_their_status(
    error: Exception, status: int, expected: dict[str, object]
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=raising(error)), base_url="http://t") as http:
        response = await http.get("/x")
    assert response.status_code == status
    assert problem_of(response) == expected


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (418, "I'm a Teapot"),
        (429, "Too Many Requests"),
        # Statuses http.HTTPStatus does not know (nginx's 499, Cloudflare's 520) get their class's title.
        (499, "Client Error"),
        (520, "Server Error"),
        (599, "Server Error"),
    ],
)
async def test_an_http_exception_of_any_status_is_a_problem(status: int, title: str) -> None:
    app = raising(HTTPException(status, "custom", headers={"X-Why": "test"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/x")
    assert (response.status_code, response.headers["x-why"]) == (status, "test")
    assert problem_of(response) == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "custom",
        "instance": "/x",
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"a": "\xff"}', "'utf-8' codec can't decode byte 0xff in position 7: invalid start byte"),
        (b"\xff\xfe{", "'utf-16-le' codec can't decode byte 0x7b in position 2: truncated data"),  # a BOM
        (b'{"a": 1', "Expecting ',' delimiter: line 1 column 8 (char 7)"),
    ],
)
async def test_a_body_json_loads_cannot_read_is_422(body: bytes, detail: str) -> None:
    async def endpoint(request: Request) -> Response:
        json.loads(await request.body())
        return Response(status_code=204)

    app = Starlette(routes=[Route("/x", endpoint, methods=["POST"])], exception_handlers=problem_handlers())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/x", content=body)
    assert response.status_code == 422
    assert problem_of(response) == {
        "type": "urn:epoch:problem:invalid-body",
        "title": "Invalid request body",
        "status": 422,
        "detail": detail,
        "instance": "/x",
    }


async def test_an_error_the_api_does_not_answer_stays_a_server_error() -> None:
    app = raising(RuntimeError("a bug"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        with pytest.raises(RuntimeError, match="^a bug$"):
            await http.get("/x")


# --- served for real ------------------------------------------------------------------------------


def test_epoch_demo_http_serves_the_api_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'users.db'}"
    epoch = str(Path(sys.executable).parent / "epoch")
    process = subprocess.Popen(
        [epoch, "demo", "--http", "--store", url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ready(base: str) -> bool:
        try:
            return httpx.get(f"{base}/directories/main", timeout=1).status_code == 404
        except httpx.TransportError:
            return False

    with serving(process, port, ready) as base:
        added = httpx.post(f"{base}/directories/main/users", json={"name": "ada"}, headers={"Idempotency-Key": "k"})
        assert (added.status_code, added.headers["etag"]) == (201, '"0"')
        again = httpx.post(f"{base}/directories/main/users", json={"name": "ada"}, headers={"Idempotency-Key": "k"})
        assert (again.status_code, again.content) == (201, added.content)
        stale = httpx.post(f"{base}/directories/main/users", json={"name": "bob"}, headers={"If-Match": '"7"'})
        assert (stale.status_code, stale.headers["etag"], stale.headers["content-type"]) == (412, '"0"', PROBLEM)
        listed = httpx.get(f"{base}/directories/main").json()
        assert [u["name"] for u in listed["users"]] == ["ada"]
        # uvicorn hands over the path as sent (raw_path) too: a directory holding '/', '%', a space, non-ASCII.
        odd = httpx.post(f"{base}/directories/a%2Fb%25%20%C3%A9/users", json={"name": "ada"})
        user_id = odd.json()["user_id"]
        assert (odd.status_code, odd.headers["location"]) == (201, f"/directories/a%2Fb%25%20%C3%A9/users/{user_id}")
        found = httpx.get(f"{base}{odd.headers['location']}")
        assert (found.status_code, found.json()) == (200, {"user_id": user_id, "name": "ada"})
        assert httpx.get(f"{base}/directories/a%2Fb%25%20%C3%A9").json()["directory"] == "a/b% é"
