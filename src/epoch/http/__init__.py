"""HTTP APIs over epoch, for Starlette and FastAPI (which is Starlette): versions as ETags, preconditions as
expected versions, errors as RFC 9457 problem details, ``Idempotency-Key`` as the command id.

Needs Starlette (extra ``web``). See ``docs/http.md``; ``epoch.examples.users.http`` is a whole API.
"""

from __future__ import annotations

from epoch.http.commands import execute
from epoch.http.preconditions import (
    ABSENT,
    Headers,
    PreconditionError,
    command_id_from,
    etag,
    expected_version_from,
    not_modified,
    precondition_of,
    version_of_etag,
)
from epoch.http.problems import PROBLEM_JSON, Problem, ProblemHandler, problem, problem_handlers, problem_of

__all__ = [
    "ABSENT",
    "PROBLEM_JSON",
    "Headers",
    "PreconditionError",
    "Problem",
    "ProblemHandler",
    "command_id_from",
    "etag",
    "execute",
    "expected_version_from",
    "not_modified",
    "problem",
    "problem_handlers",
    "precondition_of",
    "problem_of",
    "version_of_etag",
]
