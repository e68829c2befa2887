"""What changed between two decider states: both are turned into JSON-like trees (dicts, lists,
scalars) and compared, key by key and index by index, into a flat list of changes the state page shows."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["Change", "diff", "path_text", "to_tree", "value_text"]

VALUE_LIMIT = 200
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: ``kind`` is ``added``, ``removed`` or ``changed``; ``path`` the keys and indexes
    from the root (empty: the whole state); ``old``/``new`` the values (``None`` when absent)."""

    kind: str
    path: tuple[str | int, ...]
    old: Any = None
    new: Any = None


def to_tree(state: object) -> Any:
    """``state`` as dicts, lists and scalars (dataclasses, Structs, sets ... converted as for JSON);
    anything else becomes its ``repr``. Raises ``ValueError``/``TypeError``/``RecursionError`` as
    ``msgspec.to_builtins`` does for what it cannot convert."""
    return msgspec.to_builtins(state, str_keys=True, enc_hook=repr)


def diff(old: Any, new: Any, path: tuple[str | int, ...] = ()) -> list[Change]:
    """The changes that turn the tree ``old`` into ``new``, in key order (dicts) and index order (lists).

    Dicts are compared key by key and lists index by index (an insertion in the middle of a list shows as
    changes from there on and one addition: simple, and what happened at each index is still true). A
    value whose type changes (a dict becoming a list, ``1`` becoming ``1.0`` or ``True``) is changed.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            if key not in new:
                changes.append(Change("removed", (*path, key), old=old[key]))
            elif key not in old:
                changes.append(Change("added", (*path, key), new=new[key]))
            else:
                changes.extend(diff(old[key], new[key], (*path, key)))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            if index >= len(new):
                changes.append(Change("removed", (*path, index), old=old[index]))
            elif index >= len(old):
                changes.append(Change("added", (*path, index), new=new[index]))
            else:
                changes.extend(diff(old[index], new[index], (*path, index)))
        return changes
    # type() as well as ==: 1 == 1.0 == True in Python, but they are different JSON values.
    if type(old) is not type(new) or old != new:
        return [Change("changed", path, old=old, new=new)]
    return []


def path_text(path: tuple[str | int, ...]) -> str:
    """A path as ``$.users["id 1"][0].name``: ``$`` is the whole state."""
    parts = ["$"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.match(step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts)


def value_text(value: Any) -> str:
    """A value as one line of JSON, cut to a readable size."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (ValueError, TypeError, RecursionError):
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int of more digits than Python converts to text
            return f"<a {type(value).__qualname__} that cannot be shown>"
    return text if len(text) <= VALUE_LIMIT else f"{text[:VALUE_LIMIT]}… ({len(text)} characters)"
