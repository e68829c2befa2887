"""Turn records and states into what the templates show: pretty JSON, or base64 for bytes that are not JSON."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import msgspec

from epoch import RecordedEvent
from epoch.web._index import metadata_of

__all__ = ["Body", "EventView", "body_of", "event_view", "link", "state_json"]


@dataclass(frozen=True, slots=True)
class Body:
    """Event data or metadata as shown: ``kind`` is ``json``, ``base64`` (not JSON) or ``empty``."""

    kind: str
    text: str
    size: int


@dataclass(frozen=True, slots=True)
class EventView:
    """A recorded event with its data and metadata rendered, and its correlation ids picked out."""

    event: RecordedEvent
    data: Body
    metadata: Body
    correlation_id: str | None
    causation_id: str | None
    command_id: str | None


def body_of(raw: bytes) -> Body:
    """Pretty JSON when ``raw`` is JSON; otherwise base64, so no byte is ever dropped."""
    if not raw:
        return Body("empty", "", 0)
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return Body("base64", base64.b64encode(raw).decode("ascii"), len(raw))
    return Body("json", json.dumps(value, indent=2, ensure_ascii=False), len(raw))


def event_view(event: RecordedEvent) -> EventView:
    """What the pages show of ``event``."""
    metadata = metadata_of(event)

    def text(key: str) -> str | None:
        value = metadata.get(key)
        return None if value is None else str(value)

    return EventView(
        event,
        body_of(event.data),
        body_of(event.metadata),
        text("$correlation_id"),
        text("$causation_id"),
        text("$command_id"),
    )


def state_json(state: object) -> str:
    """A decider state as pretty JSON (dataclasses, Structs, dicts ...); ``repr`` for anything else."""
    return json.dumps(msgspec.to_builtins(state, str_keys=True, enc_hook=repr), indent=2, ensure_ascii=False)


def link(path: str, **params: object) -> str:
    """``path`` with the given query parameters, percent-encoded (``None`` values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path
