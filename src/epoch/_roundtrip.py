"""Why a value does not survive a JSON round trip: the field-by-field walk behind guarantee 12.

``Codec.encode`` first compares an event with what its own decoder reads back (fast); only when they
differ does it walk both here to name the first field that cannot come back (``$.values[2] is nan``)
and to tell a real loss from an ``__eq__`` that compares by identity. Metadata is encoded and checked here
too (``_encode_metadata``), remembering the last plain metadata checked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import msgspec

from epoch.errors import InvalidEvent

__all__ = [
    "VERSION_KEY",
    "_data_problem",
    "_difference",
    "_encode_metadata",
    "_equal",
    "_metadata_problem",
    "_not_utf8",
    "_path",
    "_preview",
    "_pydantic_equal",
    "_reason",
    "_unencodable",
    "_unwritable",
]

_ENCODER = msgspec.json.Encoder()


def _equal(decoded: Any, event: Any) -> bool:
    """The fast check of a decoded dataclass or Struct: ``==``."""
    return bool(decoded == event)


def _pydantic_equal(decoded: Any, event: Any) -> bool:
    """The fast check of a decoded pydantic model."""
    # BaseModel.__eq__ costs more than the decode; the fields and extras are what was written.
    return bool(
        decoded.__dict__ == event.__dict__ and (decoded.__pydantic_extra__ or {}) == (event.__pydantic_extra__ or {})
    )


def _reason(exc: BaseException) -> str:
    """One line for an encoder's, a decoder's or a user's exception: its type and what it says."""
    if isinstance(exc, UnicodeDecodeError):  # its "position" counts inside one JSON string, not the bytes
        return f"UnicodeDecodeError: invalid UTF-8 in a JSON string ({exc.reason})"
    errors = getattr(exc, "errors", None)
    if type(exc).__module__.startswith("pydantic") and callable(errors):  # pydantic's message spans lines
        try:
            found = errors(include_url=False)
            first = found[0]
            where = _path("$", *first["loc"])
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            return f"{type(exc).__name__}: {where}: {first['msg']}{more}"
        except Exception:  # an unexpected shape: fall back to the whole message
            pass
    return f"{type(exc).__name__}: {exc}"


def _path(path: str, *steps: object) -> str:
    """A JSON path in msgspec's style from pydantic's ``loc``: ``$.field``, ``$.list[0]``."""
    for step in steps:
        path = f"{path}.{step}" if isinstance(step, str) and step.isidentifier() else f"{path}[{step!r}]"
    return path


def _preview(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else f"{text[:57]}..."


def _fields(value: object) -> list[tuple[str, Any]] | None:
    """The fields of a Struct, dataclass or pydantic model instance (by attribute name), else ``None``."""
    if isinstance(value, msgspec.Struct):
        return [(name, getattr(value, name)) for name in value.__struct_fields__]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(value, "model_dump_json"):
        extra = getattr(value, "__pydantic_extra__", None) or {}
        return [(name, getattr(value, name)) for name in model_fields] + list(extra.items())
    return None


def _children(value: object, path: str) -> list[tuple[str, Any]] | None:
    """``(path, value)`` of what ``value`` holds, or ``None`` for a leaf."""
    if (fields := _fields(value)) is not None:
        return [(f"{path}.{name}", item) for name, item in fields]
    if isinstance(value, dict):
        return [(f"{path}[{_preview(key)}]", item) for key, item in value.items()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return None


def _unwritable(value: object, path: str, msgspec_kind: bool) -> str | None:
    """The first thing in ``value`` that JSON cannot hold: NaN/infinity, a lone surrogate, an unencodable leaf.

    Only on the error path. ``msgspec_kind``: try each leaf with msgspec (what encoded the event); pydantic
    serialises types msgspec does not know, so for it only the rules that hold for any encoder apply.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, and JSON has no NaN or infinity"
    if isinstance(value, str):
        return f"{path} holds a lone surrogate ({_preview(value)}), which UTF-8 cannot encode" if _lone(value) else None
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, str) and _lone(key):
                return f"{path} has the key {_preview(key)}, a lone surrogate that UTF-8 cannot encode"
            if msgspec_kind and (problem := _unencodable({key: None})) is not None:
                return f"{path} has the key {_preview(key)}: {problem}"
    children = _children(value, path)
    if children is None:
        problem = _unencodable(value) if msgspec_kind else None
        return None if problem is None else f"{path}: {problem}"
    for child_path, child in children:
        if (problem := _unwritable(child, child_path, msgspec_kind)) is not None:
            return problem
    return None


def _not_utf8(value: object, path: str) -> str | None:
    """The first ``bytes`` in ``value`` that are not UTF-8 (which pydantic cannot write as text)."""
    if isinstance(value, bytes):
        try:
            value.decode()
        except UnicodeDecodeError:
            return f"{path} holds bytes that are not UTF-8 ({_preview(value)}), which pydantic writes as text"
        return None
    found = (_not_utf8(child, child_path) for child_path, child in _children(value, path) or [])
    return next((problem for problem in found if problem is not None), None)


def _lone(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (which no UTF-8 encoder writes)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _unencodable(value: object) -> str | None:
    try:
        _ENCODER.encode(value)
    except Exception as exc:
        return _reason(exc)
    return None


def _difference(original: object, decoded: object, path: str, as_json: bool = False) -> str | None:
    """Where ``decoded`` differs from ``original``, compared field by field and item by item, or ``None``.

    The arbiter when ``==`` says "unequal": a class without value equality (``eq=False``, a pydantic
    private attribute) compares equal here when every field it wrote reads back equal. ``as_json``: a
    tuple may read back as a list (metadata is plain JSON).
    """
    if original is decoded:
        return None
    differs = f"{path} would decode as {_preview(decoded)}, not {_preview(original)}"
    if as_json and type(original) is tuple and type(decoded) is list:
        original = list(original)
    if type(original) is not type(decoded):
        # An int in a float field reads back as a float: the same number when it is exactly representable.
        exact = type(original) is int and type(decoded) is float and original == decoded
        return None if exact else differs
    if (fields := _fields(original)) is not None:
        pairs = zip(fields, _fields(decoded) or [], strict=False)
        found = (_difference(a, b, f"{path}.{name}", as_json) for (name, a), (_, b) in pairs)
        return next((problem for problem in found if problem is not None), None)
    if isinstance(original, dict):
        assert isinstance(decoded, dict)
        if original.keys() != decoded.keys():
            for key in original:
                if not isinstance(key, str):
                    return f"{path} has the key {_preview(key)}, not a str (JSON object keys are strings)"
            return differs
        found = (_difference(item, decoded[key], f"{path}[{_preview(key)}]", as_json) for key, item in original.items())
        return next((problem for problem in found if problem is not None), None)
    if isinstance(original, (list, tuple)):
        assert isinstance(decoded, (list, tuple))
        if len(original) != len(decoded):
            return differs
        items = enumerate(zip(original, decoded, strict=True))
        found = (_difference(a, b, f"{path}[{index}]", as_json) for index, (a, b) in items)
        return next((problem for problem in found if problem is not None), None)
    if isinstance(original, Decimal):  # written as its str: Decimal("NaN") reads back the same, unequal to itself
        return None if str(original) == str(decoded) else differs
    try:
        return None if original == decoded else differs
    except Exception:  # e.g. comparing a signalling NaN raises
        return differs


_OBJECT = msgspec.json.Decoder(dict[str, Any])


def _data_problem(entry: Any, event: Any, data: bytes | None, cause: Exception | None) -> str | None:
    """Why ``event`` cannot be stored, found again slowly, or ``None``: it reads back equal field by field."""
    try:
        if data is None:  # the encoder refused
            found = _unwritable(event, "$", entry.msgspec_kind)
            if found is None and not entry.msgspec_kind and "utf-8" in str(cause):
                found = _not_utf8(event, "$")  # pydantic writes bytes as UTF-8 text unless told base64
            return found or _reason(cause or ValueError())
        # NaN and infinity first: they decode as null, and "got null" would only puzzle.
        if (problem := _unwritable(event, "$", msgspec_kind=False)) is not None:
            return problem
        try:
            decoded = entry.from_json(data)
        except Exception as exc:
            return f"it would not decode: {_reason(exc)}"
        return _difference(event, decoded, "$")  # also when the class's __eq__ raised
    except RecursionError:  # a cycle or deep nesting: the walk gives up, the refusal stands
        return _reason(cause) if cause is not None else "it would not decode back to an equal value"


VERSION_KEY = "$event_version"
"""The metadata key of an event's schema version (left out for version 1)."""

# An append's events, and a handler's commands, pass the same metadata again and again: the last plain one
# (str keys; str or int values, compared exactly: True == 1, but not in type) is remembered with its
# checked encoding, as one tuple (threads read the old one or the new one, never half of each).
_EXACT = (str, int)
_last_metadata: tuple[int, tuple[tuple[str, Any], ...], bytes] = (0, (), b"")


def _encode_metadata(type_name: str, version: int, metadata: Mapping[str, Any] | None) -> bytes:
    """The metadata of an event of ``type_name`` at schema ``version``, encoded and checked (guarantee 12)."""
    global _last_metadata
    if not metadata and version == 1:
        return b""
    plain: tuple[tuple[str, Any], ...] | None = None
    if type(metadata) is dict:
        plain = tuple(metadata.items())
        for key, value in plain:
            if type(key) is not str or type(value) not in _EXACT:
                plain = None
                break
        else:
            known_version, known, encoded = _last_metadata
            if known == plain and known_version == version:
                return encoded
    encoded = _checked_metadata(type_name, version, metadata)
    if plain is not None:
        _last_metadata = (version, plain, encoded)
    return encoded


def _checked_metadata(type_name: str, version: int, metadata: Mapping[str, Any] | None) -> bytes:
    try:
        meta = dict(metadata) if metadata else {}
    except Exception as exc:
        raise InvalidEvent("", 0, f"cannot encode {type_name!r}: metadata: {_reason(exc)}") from exc
    if version == 1:
        meta.pop(VERSION_KEY, None)
    else:
        meta[VERSION_KEY] = version
    if not meta:
        return b""
    encoded: bytes | None = None
    cause: Exception | None = None
    try:
        encoded = _ENCODER.encode(meta)
        # Guarantee 12 for metadata, a plain JSON object: it must read back as the JSON it was written as.
        # Equal to the dict given is the common case (strs and ints); else to its JSON form, so a UUID or
        # a datetime may become a str, but NaN (written as null) or an int key (written as a str) may not.
        decoded = _OBJECT.decode(encoded)
        if decoded == meta or decoded == msgspec.to_builtins(meta):
            return encoded
    except Exception as exc:
        cause = exc
    problem = _metadata_problem(meta, encoded, cause)
    if problem is not None:
        raise InvalidEvent("", 0, f"cannot encode {type_name!r}: metadata {problem}") from cause
    assert encoded is not None
    return encoded


def _metadata_problem(meta: dict[str, Any], encoded: bytes | None, cause: Exception | None) -> str | None:
    try:
        if (problem := _unwritable(meta, "$", msgspec_kind=True)) is not None:
            return problem
        if cause is not None or encoded is None:
            return f"$: {_reason(cause or ValueError())}"
        return _difference(msgspec.to_builtins(meta), _OBJECT.decode(encoded), "$", as_json=True)
    except Exception:  # a cycle, deep nesting, a __eq__ that raises: the refusal stands
        return f"$: {_reason(cause)}" if cause is not None else "$ would not decode back to an equal value"
