"""``execute``: run a command for an HTTP request, its preconditions and idempotency key applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from epoch import CommandHandler, ExecuteResult
from epoch.http.preconditions import Headers, _Absent, command_id_from, precondition_of

__all__ = ["execute"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


async def execute(
    handler: CommandHandler[C, S, E],
    id: object,
    command: C,
    headers: Headers,
    *,
    required: bool = False,
    metadata: Mapping[str, Any] | None = None,
    services: object = None,
) -> ExecuteResult[S, E]:
    """``handler.execute(id, command)`` as the request's headers ask.

    ``If-Match``/``If-None-Match`` become the expected version, checked once (a mismatch raises
    ``WrongExpectedVersion``, answered 412 by :func:`~epoch.http.problem_handlers`). Without either the
    command takes the handler's usual path: decided on the loaded state, re-decided on a conflict — or,
    with ``required``, it is refused with 428. ``Idempotency-Key`` becomes the command id, so a request
    sent again with the same key returns the first execution's result without deciding again.
    """
    expected = precondition_of(headers, required=required)
    command_id = command_id_from(headers)
    if isinstance(expected, _Absent):
        return await handler.execute(id, command, metadata=metadata, services=services, command_id=command_id)
    return await handler.execute(id, command, expected, metadata=metadata, services=services, command_id=command_id)
