"""Errors as RFC 9457 problem details (``application/problem+json``) for Starlette and FastAPI apps.

:func:`problem_handlers` gives the ``exception_handlers`` of an app: epoch's errors, the request body's
decoding errors, :class:`~epoch.http.PreconditionError` and the decider's own errors (through a table
the app passes) each become one response with ``type``, ``title``, ``status``, ``detail`` and
``instance`` (the request's path), plus ``stream``/``expected``/``actual`` where epoch knows them.
With FastAPI installed (it is optional), its ``RequestValidationError`` (a body, path or query parameter
its pydantic models refuse) is answered too, with the list of ``errors``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec

from epoch.errors import (
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidStreamName,
    MissingDependency,
    StoreUnavailable,
    StreamClosed,
    StreamDeleted,
    WrongExpectedVersion,
)
from epoch.http.preconditions import PreconditionError, etag

try:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
    raise MissingDependency("starlette", "web") from exc

__all__ = ["PROBLEM_JSON", "Problem", "ProblemHandler", "problem", "problem_handlers", "problem_of"]

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:epoch:problem:"  # a URN: the type names the problem, it does not promise a page to read

# A coroutine function (not any awaitable): what both Starlette's and FastAPI's exception_handlers accept.
ProblemHandler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class Problem:
    """How a domain error is answered: ``status``, and optionally its ``type`` URI and ``title``.

    Without them the type is ``urn:epoch:problem:<ClassName>`` and the title the class name; the detail
    is always ``str(error)``.
    """

    status: int
    type: str | None = None
    title: str | None = None


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: object,
) -> Response:
    """A problem-details response; ``extensions`` become extra members of the JSON object."""
    body: dict[str, object] = {"type": type, "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return Response(msgspec.json.encode(body), status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


def _version(value: object) -> object:
    # Expected versions are enum members or ints; JSON gets their names.
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else value


def problem_of(
    error: Exception, instance: str, domain_errors: Mapping[type[BaseException], int | Problem]
) -> Response | None:
    """The response for ``error``, or ``None`` when it is not one the API answers (a server error)."""
    for cls in type(error).__mro__:  # the most specific entry of the table wins
        if cls in domain_errors:
            entry = domain_errors[cls]
            answer = entry if isinstance(entry, Problem) else Problem(entry)
            name = type(error).__name__
            return problem(
                answer.status,
                answer.title or name,
                str(error),
                type=answer.type or f"{_TYPE}{name}",
                instance=instance,
            )
    match error:
        case WrongExpectedVersion(stream=stream, expected=expected, actual=actual):
            headers = {} if actual is None else {"ETag": etag(actual)}
            return problem(
                412,
                "Precondition Failed",
                str(error),
                type=f"{_TYPE}wrong-expected-version",
                instance=instance,
                headers=headers,
                stream=stream,
                expected=_version(expected),
                actual=actual,
            )
        case StreamClosed(stream=stream):
            return problem(
                409, "Stream closed", str(error), type=f"{_TYPE}stream-closed", instance=instance, stream=stream
            )
        case StreamDeleted(stream=stream):
            return problem(
                410, "Stream deleted", str(error), type=f"{_TYPE}stream-deleted", instance=instance, stream=stream
            )
        case InvalidStreamName() | InvalidEvent() | InvalidExpectedVersion():
            return problem(422, "Invalid input", str(error), type=f"{_TYPE}invalid-input", instance=instance)
        # Bytes that are not UTF-8 (inside a JSON string for msgspec, anywhere for json.loads) raise
        # UnicodeDecodeError, a ValueError but not a DecodeError.
        case msgspec.DecodeError() | json.JSONDecodeError() | UnicodeDecodeError():
            return problem(422, "Invalid request body", str(error), type=f"{_TYPE}invalid-body", instance=instance)
        case PreconditionError(status=status, title=title, detail=detail):
            return problem(status, title, detail, type=f"{_TYPE}precondition", instance=instance)
        case StoreUnavailable():
            return problem(
                503,
                "Store unavailable",
                str(error),
                type=f"{_TYPE}store-unavailable",
                instance=instance,
                headers={"Retry-After": "1"},
            )
        case HTTPException(status_code=status, detail=detail):
            return problem(status, _phrase(status), str(detail), instance=instance, headers=error.headers)
    fastapi = sys.modules.get("fastapi.exceptions")  # an error of FastAPI's exists only once it is imported
    if fastapi is not None and isinstance(error, fastapi.RequestValidationError):
        return _invalid_request(error.errors(), instance)
    return None


def _invalid_request(errors: Sequence[Mapping[str, Any]], instance: str) -> Response:
    """FastAPI's validation errors as one problem: each error's message and where (``body.amount``)."""
    listed: list[dict[str, Any]] = []
    said: list[str] = []
    for found in errors:
        loc = [part if isinstance(part, int) else str(part) for part in found.get("loc", ())]
        message = str(found.get("msg", ""))
        listed.append({"type": str(found.get("type", "")), "loc": loc, "msg": message})
        reason = (found.get("ctx") or {}).get("error")  # why the JSON did not decode
        if isinstance(reason, str):
            message = f"{message}: {reason}"
        said.append(f"{message} - at `{'.'.join(map(str, loc))}`")
    in_body = all(item["loc"][:1] == ["body"] for item in listed)
    kind, title = ("invalid-body", "Invalid request body") if in_body else ("invalid-input", "Invalid input")
    return problem(422, title, "; ".join(said), type=f"{_TYPE}{kind}", instance=instance, errors=listed)


def _fastapi_errors() -> list[type[BaseException]]:
    """FastAPI's ``RequestValidationError`` when FastAPI is installed (an optional dependency), else none."""
    try:
        module = importlib.import_module("fastapi.exceptions")
    except ImportError:
        return []
    error: type[BaseException] = module.RequestValidationError
    return [error]


def _phrase(status: int) -> str:
    """The reason phrase of ``status``; for one http.HTTPStatus does not know (nginx's 499, a CDN's 520),
    its class's."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {4: "Client Error", 5: "Server Error"}.get(status // 100, "Error")


def problem_handlers(
    domain_errors: Mapping[type[BaseException], int | Problem] | None = None,
) -> dict[Any, ProblemHandler]:
    """``exception_handlers`` for ``Starlette(...)`` or ``FastAPI(...)``: each error the API answers
    becomes problem+json; anything else is re-raised, so it stays a 500 with the server's traceback.

    ``domain_errors`` maps the decider's exception classes to a status or a :class:`Problem`, e.g.
    ``{DuplicateName: 409, UnknownUser: Problem(404, title="No such user")}``; subclasses are matched.
    """
    table = dict(domain_errors or {})

    async def handle(request: Request, error: Exception) -> Response:
        response = problem_of(error, request.url.path, table)
        if response is None:
            raise error
        return response

    answered: list[type[BaseException]] = [
        *table,
        WrongExpectedVersion,
        StreamClosed,
        StreamDeleted,
        InvalidStreamName,
        InvalidEvent,
        InvalidExpectedVersion,
        msgspec.DecodeError,
        json.JSONDecodeError,
        UnicodeDecodeError,
        PreconditionError,
        StoreUnavailable,
        HTTPException,
        *_fastapi_errors(),  # FastAPI's own 422 is application/json: this one is problem+json
    ]
    return dict.fromkeys(answered, handle)
