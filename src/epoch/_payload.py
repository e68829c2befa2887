"""How the command line and the web explorer show an event's stored bytes (its data or its metadata).

Data is arbitrary bytes (DESIGN §2), and metadata written by another tool or an older version may not be
JSON either, so no command and no page may assume either is. One rule, used by ``epoch read/tail --json``
and by every page of ``epoch serve``:

- empty bytes are ``null``;
- well-formed UTF-8 JSON (RFC 8259: no ``NaN``, no lone surrogates, no trailing junk), nested at most
  :data:`MAX_DEPTH` levels, is shown as that JSON with its tokens verbatim (numbers keep every digit,
  keys keep their order and repeats); only the whitespace between tokens changes;
- anything else is bytes: ``{"$bytes": "<base64 of the stored bytes>"}`` in JSON output, an escaped
  text preview plus the base64 on a page. Stored JSON that reads as one of these two forms (the JSON
  ``null``, or an object whose only key is ``$bytes``) is shown as bytes too, so the output is never
  ambiguous: ``null`` is ``b""``, ``{"$bytes": s}`` is ``base64.b64decode(s)``, anything else is JSON.

The nesting limit keeps every reader of the output safe: Python's ``json.loads`` fails near 1,000
levels, and so does rendering on a deep stack.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["BYTES_KEY", "MAX_DEPTH", "Payload", "bytes_of", "escape_text", "object_of", "payload_of"]

MAX_DEPTH = 100
"""Deeper JSON is shown as bytes."""

BYTES_KEY = "$bytes"
"""The key of the JSON object that stands for bytes that are not shown as JSON."""

PREVIEW_BYTES = 4096
"""How much of a payload the escaped previews show."""

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True, slots=True)
class Payload:
    """Stored bytes as shown: ``json`` is their compact JSON text when they are shown as JSON, else ``None``.

    ``reason`` says why bytes that look like JSON are not shown as JSON (deep nesting, ``null``, the
    ``$bytes`` form); it is ``None`` for JSON, for empty bytes and for bytes that are simply not JSON.
    """

    raw: bytes
    json: bytes | None
    reason: str | None = None

    @property
    def kind(self) -> str:
        """``empty``, ``json`` or ``bytes``."""
        if not self.raw:
            return "empty"
        return "bytes" if self.json is None else "json"

    @property
    def base64(self) -> str:
        """The stored bytes in base64 (standard alphabet, padded)."""
        return base64.b64encode(self.raw).decode("ascii")

    def to_json(self) -> msgspec.Raw:
        """What ``--json`` output holds: ``null``, the JSON itself, or ``{"$bytes": "<base64>"}``."""
        if not self.raw:
            return msgspec.Raw(b"null")
        if self.json is not None:
            return msgspec.Raw(self.json)
        return msgspec.Raw(msgspec.json.encode({BYTES_KEY: self.base64}))

    def pretty(self) -> str:
        """The JSON indented for reading, with characters that print as nothing (or move text) escaped.

        Outside its strings JSON holds only whitespace, so every such character is inside a string,
        where a ``\\u`` escape means the same character: the text stays JSON with the same value.
        """
        if self.json is None:
            return ""
        text = msgspec.json.format(self.json, indent=2).decode("utf-8")
        return "\n".join(line if line.isprintable() else _escape_json_line(line) for line in text.split("\n"))

    def preview(self, limit: int = PREVIEW_BYTES) -> str:
        """The first ``limit`` bytes as text, escaped: see :func:`escape_text`."""
        text = escape_text(self.raw[:limit].decode("utf-8", errors="backslashreplace"))
        return text if len(self.raw) <= limit else f"{text}… ({len(self.raw) - limit} more bytes)"

    def one_line(self, limit: int = PREVIEW_BYTES) -> str:
        """A one-line, escaped rendering for plain-text output: the compact JSON, else the preview."""
        if self.json is None:
            return self.preview(limit)
        shown = self.json[:limit].decode("utf-8", errors="ignore")  # a cut may split one character
        text = escape_text(shown)
        return text if len(self.json) <= limit else f"{text}… ({len(self.json) - limit} more bytes)"


def payload_of(raw: bytes) -> Payload:
    """How ``raw`` is shown (see the module docstring); never raises, whatever the bytes."""
    if not raw:
        return Payload(raw, None)
    judged = _judge(raw, _OBJECT_OR_ANY)
    if judged is None:
        return Payload(raw, None)
    reason = judged[1]
    if reason is not None:
        return Payload(raw, None, reason)
    return Payload(raw, msgspec.json.format(raw, indent=-1))


def object_of(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds when it is shown as JSON (e.g. metadata); else an empty dict."""
    judged = _judge(raw, _OBJECT) if raw else None
    return judged[0] if judged is not None and judged[1] is None else {}


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_OBJECT_OR_ANY: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])


def _judge(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> tuple[Any, str | None] | None:
    """The decoded value and why it is not shown as JSON (``None``: it is); ``None`` when not JSON at all."""
    try:
        value = decoder.decode(raw)
    except ValueError:
        # msgspec.DecodeError, UnicodeDecodeError (invalid UTF-8 inside a string) and an int with too
        # many digits are all ValueErrors.
        return None
    except RecursionError:  # nested deeper than the interpreter allows, so far deeper than the limit
        return {}, _TOO_DEEP
    if value is None:
        return value, "the JSON null, which stands for empty bytes"
    if isinstance(value, dict) and list(value) == [BYTES_KEY]:
        return value, f"an object with the single key {BYTES_KEY!r}, which stands for bytes"
    # Fewer brackets than the limit cannot nest deeper than it: skip the walk for almost every payload.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        return value, _TOO_DEEP
    return value, None


def bytes_of(shown: object) -> bytes | None:
    """The bytes ``{"$bytes": "<base64>"}`` stands for, ``b""`` for ``None``; ``None`` for any other JSON.

    The inverse of :meth:`Payload.to_json` (after ``json.loads``) for what is shown as bytes.
    """
    if shown is None:
        return b""
    if isinstance(shown, dict) and list(shown) == [BYTES_KEY] and isinstance(shown[BYTES_KEY], str):
        try:
            return base64.b64decode(shown[BYTES_KEY], validate=True)
        except binascii.Error:
            return None
    return None


def escape_text(text: str) -> str:
    """``text`` on one line with every character that does not print escaped as in a Python literal.

    Line breaks, tabs, terminal escape sequences (ESC, C1 controls), zero-width and bidirectional
    formatting characters, NUL: ``\\n``, ``\\x1b``, ``\\u202e``... Invalid UTF-8 decoded with
    ``backslashreplace`` already reads ``\\xff``. A preview for people, not a lossless form.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_UNPRINTABLE_IN_JSON = re.compile(r"[^ -~]")  # candidates only: non-ASCII and controls; refined below


def _escape_json_line(line: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match[0]
        if char.isprintable():
            return char
        code = ord(char)
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000  # JSON spells characters beyond the BMP as a UTF-16 surrogate pair
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return _UNPRINTABLE_IN_JSON.sub(escape, line)


def _depth(value: object) -> int:
    """The nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            if depth > MAX_DEPTH:
                return depth  # deep enough to decide: stop walking
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in item if isinstance(child, dict | list))
    return deepest
