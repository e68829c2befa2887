"""The stream vocabulary as code: the rules for names and expected versions (DESIGN §1).

Every store, the command handler and the projections check names and guards with these functions, so
all of them refuse the same input with the same error::

    check_stream_name("users-42")                      # -> "users-42"
    check_category("users")                            # a stream name without "-"
    check_name("a\\x00b", 256)                        # -> "contains a control character" (None: valid)
    enforce_expected_version("users-42", 3, actual=4)  # raises WrongExpectedVersion
"""

from __future__ import annotations

import re
from functools import lru_cache

from epoch.errors import InvalidExpectedVersion, InvalidStreamName, WrongExpectedVersion
from epoch.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion

__all__ = [
    "MAX_STREAM_NAME",
    "MAX_TYPE_NAME",
    "check_category",
    "check_expected_version",
    "check_name",
    "check_stream_name",
    "enforce_expected_version",
]

MAX_STREAM_NAME = 512
MAX_TYPE_NAME = 256

# Category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _name_problem(name: object, limit: int) -> str | None:
    if not isinstance(name, str):
        return f"must be a str, not {type(name).__name__}"
    if not 1 <= len(name) <= limit:
        return f"must have 1 to {limit} characters, not {len(name)}"
    if name != name.strip():
        return "has leading or trailing whitespace"
    if _CONTROL.search(name):
        return "contains a control character"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate"
    return None


@lru_cache(maxsize=8192)
def _stream_problem(name: str) -> str | None:
    return _name_problem(name, MAX_STREAM_NAME)


def check_stream_name(stream: object) -> str:
    """Return ``stream`` if it is a valid stream name, else raise :class:`InvalidStreamName`."""
    problem = _stream_problem(stream) if type(stream) is str else _name_problem(stream, MAX_STREAM_NAME)
    if problem is not None:
        raise InvalidStreamName(stream, problem)
    return stream  # type: ignore[return-value]


def check_category(name: object) -> str:
    """Return ``name`` if it is a valid category (a valid stream name without ``-``), else raise."""
    name = check_stream_name(name)
    if "-" in name:
        raise InvalidStreamName(name, "a category contains no '-'")
    return name


def check_expected_version(stream: str, expected: object) -> ExpectedVersion | int:
    """Normalise ``expected_version``: ``None`` becomes NO_STREAM; bools and negative ints are refused."""
    if expected is None:
        return NO_STREAM
    if isinstance(expected, ExpectedVersion):
        return expected
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return int(expected)
    raise InvalidExpectedVersion(stream, expected)


def enforce_expected_version(stream: str, expected: ExpectedVersion | int, actual: int | None) -> None:
    """Raise :class:`WrongExpectedVersion` unless ``actual`` satisfies ``expected``."""
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = actual is None
    elif expected is STREAM_EXISTS:
        ok = actual is not None
    else:
        ok = actual == expected
    if not ok:
        raise WrongExpectedVersion(stream, expected, actual)


def check_name(name: object, limit: int) -> str | None:
    """Why ``name`` is not a valid stream or type name of at most ``limit`` code points (``None``: valid)."""
    return _name_problem(name, limit)
