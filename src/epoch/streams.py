"""The stream vocabulary as code: the rules for names and expected versions (DESIGN §1).

Every store, the command handler and the projections check names and guards with these functions, so
all of them refuse the same input with the same error::

    check_stream_name("users-42")                      # -> "users-42"
    check_category("users")                            # a stream name without "-"
    check_name("a\\x00b", 256)                         # -> "contains a control character" (None: valid)
    enforce_expected_version("users-42", 3, actual=4)  # raises WrongExpectedVersion
"""

from __future__ import annotations

from epoch.stores._checks import (
    MAX_STREAM_NAME,
    MAX_TYPE_NAME,
    check_category,
    check_expected_version,
    check_stream_name,
    enforce_expected_version,
)
from epoch.stores._checks import _name_problem as check_name

__all__ = [
    "MAX_STREAM_NAME",
    "MAX_TYPE_NAME",
    "check_category",
    "check_expected_version",
    "check_name",
    "check_stream_name",
    "enforce_expected_version",
]
