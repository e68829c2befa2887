"""``epoch._payload``, the one rule by which the CLI and the explorer show stored bytes, checked against an
independent oracle built on Python's own ``json`` module, over hostile and well-formed JSON alike."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from epoch._payload import MAX_DEPTH, bytes_of, escape_text, object_of, payload_of
from tests.hostile import any_text, hostile_json
from tests.payloads import SHOWN_AS_BYTES, SHOWN_AS_JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


@st.composite
def dumped(draw: st.DrawFn) -> bytes:
    """A JSON value written by Python's json: lone surrogates come out as ``\\ud800`` escapes or, as raw
    text, as bytes that are not UTF-8."""
    text = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    return text.encode("utf-8", "surrogatepass")


any_bytes = st.one_of(hostile_json, dumped(), st.binary(max_size=64), st.sampled_from(list(SHOWN_AS_BYTES.values())))


class _NotShown(Exception):
    pass


def _refuse(token: str) -> Any:
    raise _NotShown(token)


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _NotShown(token)
    return value


def _depth_and_text_ok(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a lone surrogate (from a \ud800 escape) is not text
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict | list):
        if depth + 1 > MAX_DEPTH:
            return False
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        return all(_depth_and_text_ok(item, depth + 1) for item in items)
    return True


def oracle(raw: bytes) -> str:
    """``empty``, ``json`` or ``bytes``, by DESIGN's rule, with Python's json module doing the parsing."""
    if not raw:
        return "empty"
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse, parse_float=_finite)
    except (ValueError, RecursionError, _NotShown):
        return "bytes"
    if value is None or (isinstance(value, dict) and list(value) == ["$bytes"]):
        return "bytes"
    return "json" if _depth_and_text_ok(value) else "bytes"


@given(raw=any_bytes)
@example(raw=b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
@example(raw=b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
@example(raw=b'{"a": 1e308}')
@example(raw=b'{"a": 1e309}')
@example(raw=b"1" * 4300)
@example(raw=b"1" * 4301)
def test_payload_agrees_with_the_oracle_and_loses_nothing(raw: bytes) -> None:
    payload = payload_of(raw)
    assert payload.kind == oracle(raw)
    shown = json.loads(bytes(payload.to_json()))  # what --json prints is JSON for Python's own parser
    if payload.kind == "json":
        assert shown == json.loads(raw) and bytes_of(shown) is None
        assert json.loads(payload.pretty()) == shown
        assert object_of(raw) == (shown if isinstance(shown, dict) else {})
    else:
        assert bytes_of(shown) == raw  # the exact stored bytes
        assert shown == ({"$bytes": base64.b64encode(raw).decode()} if raw else None)
        assert object_of(raw) == {}
    assert payload.preview().isprintable() and payload.one_line().isprintable()
    assert all(line.isprintable() for line in payload.pretty().split("\n"))


def test_the_pinned_cases() -> None:
    for name, raw in SHOWN_AS_BYTES.items():
        assert payload_of(raw).kind == "bytes", name
    for raw, compact in SHOWN_AS_JSON.items():
        assert payload_of(raw).json == compact
    assert payload_of(b"").kind == "empty"
    assert payload_of(b"[" * 101 + b"]" * 101).reason == "nested deeper than 100 levels"
    assert payload_of(b'{"a":' * 10_000 + b"1" + b"}" * 10_000).reason == "nested deeper than 100 levels"
    assert payload_of(b"null").reason == "the JSON null, which stands for empty bytes"
    assert payload_of(b'{"$bytes": ""}').reason == "an object with the single key '$bytes', which stands for bytes"
    assert payload_of(b"\xff").reason is None


def test_previews_escape_what_does_not_print() -> None:
    assert escape_text("a\nb\tc\r\x00\x1b[2J\x9b\u200b\u202e\u2028\U000e0001 é 語 \\") == (
        "a\\nb\\tc\\r\\x00\\x1b[2J\\x9b\\u200b\\u202e\\u2028\\U000e0001 é 語 \\"
    )
    assert payload_of(b"\xff\xfeok\n").preview() == "\\xff\\xfeok\\n"
    assert payload_of(b"\x00" * 5000).preview() == "\\x00" * 4096 + "… (904 more bytes)"
    assert payload_of(b'{"a": "\xe2\x80\xae"}').pretty() == '{\n  "a": "\\u202e"\n}'
    assert payload_of(b'{"a": "\xf3\xa0\x80\x81"}').pretty() == '{\n  "a": "\\udb40\\udc01"\n}'
    assert payload_of(b'{"a": "\xe2\x80\xae"}').one_line() == '{"a":"\\u202e"}'
