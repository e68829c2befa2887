"""Hostile inputs for property-based tests: what an attacker (or an unlucky user) hands epoch.

One place for the strategies every fuzz test draws from, so "every Unicode category", "deep JSON" and
"2**63" mean the same thing in the store, codec, command, CLI and explorer tests. The number of
examples comes from the hypothesis profile: ``short`` in ``make test``, ``long`` under ``make fuzz``.
"""

from __future__ import annotations

import math
import os
import sys
import unicodedata

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "UNICODE_CATEGORIES",
    "any_text",
    "bad_numbers",
    "categories_arg",
    "hostile_json",
    "hostile_names",
    "huge_ints",
    "valid_names",
]

settings.register_profile(
    "short",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("EPOCH_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("EPOCH_FUZZ_PROFILE", "short"))

# Every general category Unicode defines (Cs: surrogates; Cn: unassigned), so a property that holds
# for these holds for "any string".
UNICODE_CATEGORIES = (
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf",
    "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn",
)  # fmt: skip

_one_category = st.sampled_from(UNICODE_CATEGORIES).flatmap(
    lambda category: st.characters(categories=[category])  # type: ignore[list-item]
)

any_text = st.text(alphabet=_one_category, max_size=40) | st.text(max_size=40)
"""Strings mixing characters of every Unicode category, lone surrogates and controls included."""

_EDGES = [" ", "\t", "\n", "\u00a0", "\u2028", "\u3000", "\x00", "\x7f", "\x85", "\ud800", "-", "--"]


@st.composite
def _long_name(draw: st.DrawFn) -> str:
    """Around the 512 code point limit: 500 to 530 code points, sometimes astral."""
    char = draw(st.sampled_from(["a", "é", "語", "\U0001d518", "-"]))
    return char * draw(st.integers(500, 530))


hostile_names = st.one_of(
    any_text,
    _long_name(),
    st.builds(lambda e, s, f: e + s + f, st.sampled_from(_EDGES), any_text, st.sampled_from(["", *_EDGES])),
    st.sampled_from(["", " ", "a-", "-a", "a\x00b", "users-\ud83d", "\u200b", "users-\u2028"]),
)
"""Names an attacker chooses: any category, whitespace and control edges, lengths around the limits."""


def is_valid_name(name: str, limit: int = 512) -> bool:
    """DESIGN §1's rule for stream and event type names (the reference the tests compare against)."""
    if not 1 <= len(name) <= limit or name != name.strip():
        return False
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in name)


_name_char = st.characters(exclude_categories=["Cc", "Cs"])
valid_names = st.one_of(
    st.text(_name_char, min_size=1, max_size=40).map(str.strip).filter(bool),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "語", "\U0001d518"]), st.integers(500, 512)),
    st.sampled_from(["users-1", "a b", "'; --", "\u200b", "x\u2028y", "-", "a-b-c"]),
)
"""Names a store must accept and round-trip exactly: any category but Cc and Cs, up to 512 code points."""

huge_ints = st.sampled_from([2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**100, -(2**63) - 1, -(2**100)])

bad_numbers = st.one_of(
    huge_ints,
    st.integers(max_value=-1),
    st.sampled_from([True, False, 1.0, 0.5, math.nan, math.inf, -math.inf, "0", "1", b"1", [], {}, 1j]),
)
"""Anything that is not a version or position a store accepts (negative, bool, float, str, overflow)."""


categories_arg: st.SearchStrategy[list[str] | str] = st.one_of(
    st.just([]),
    st.lists(st.sampled_from(["users", "orders", "a", "x"]), max_size=6),
    st.sampled_from(["users", "orders"]),
)
"""A ``categories`` filter: empty, repeated names, one name as a str."""


def _deep(depth: int, kind: str) -> bytes:
    open_, close = ("[", "]") if kind == "list" else ('{"a":', "}")
    return (open_ * depth + "1" + close * depth).encode()


hostile_json = st.one_of(
    st.builds(
        _deep, st.sampled_from([100, 1000, 10_000, sys.getrecursionlimit() * 4]), st.sampled_from(["list", "dict"])
    ),
    st.sampled_from(
        [
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": -Infinity}',
            b'{"a": 1e999}',
            b'{"a": ' + str(2**100).encode() + b"}",
            b'{"a": ' + str(2**64).encode() + b"}",
            b'{"a": "\xff\xfe"}',
            b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate: not UTF-8
            b'{"a": "\\ud800"}',  # an escaped lone surrogate: valid JSON, not valid text
            b'{"a": "\x00"}',
            b'{"a": "\\u0000"}',
            b"\x00",
            b"\xff",
            b"[]",
            b"1",
            b'"text"',
            b"null",
            b"{",
            b'{"a": 1,}',
            b'{"a": 1} trailing',
            b"\xef\xbb\xbf{}",  # a byte order mark
        ]
    ),
    st.binary(max_size=64),
)
"""Bytes that claim to be JSON: deep nesting, non-finite and huge numbers, invalid UTF-8, NUL, junk."""
