"""Turn records and states into what the templates show: pretty JSON, or for bytes that are not shown as
JSON an escaped preview and their base64 (the rule is ``epoch._payload``'s, shared with the CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

import msgspec

from epoch import RecordedEvent
from epoch._payload import payload_of
from epoch.web._index import metadata_of

__all__ = ["Body", "EventView", "body_of", "event_view", "link", "state_json"]

STATE_REPR_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Body:
    """Event data or metadata as shown: ``kind`` is ``json``, ``bytes`` (not shown as JSON) or ``empty``.

    ``text`` is the pretty JSON, or for bytes an escaped preview; ``base64`` holds every byte, so none is
    ever dropped; ``reason`` says why bytes that look like JSON are shown as bytes.
    """

    kind: str
    text: str
    base64: str
    size: int
    reason: str | None


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
    """Pretty JSON when ``raw`` is shown as JSON; otherwise an escaped preview and the base64."""
    payload = payload_of(raw)
    if payload.kind == "json":
        return Body("json", payload.pretty(), "", len(raw), None)
    if payload.kind == "bytes":
        return Body("bytes", payload.preview(), payload.base64, len(raw), payload.reason)
    return Body("empty", "", "", 0, None)


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
    """A decider state as pretty JSON (dataclasses, Structs, dicts ...); ``repr`` for anything else.

    A state that JSON cannot show (nested too deep, an int of more digits than Python converts) is
    shown with ``repr`` too, cut to a readable size: a page never fails on a state.
    """
    try:
        return json.dumps(msgspec.to_builtins(state, str_keys=True, enc_hook=repr), indent=2, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        try:
            text = repr(state)
        except (ValueError, RecursionError):
            return f"<a {type(state).__qualname__} that cannot be shown>"
        return text if len(text) <= STATE_REPR_LIMIT else f"{text[:STATE_REPR_LIMIT]}… ({len(text)} characters)"


def link(path: str, **params: object) -> str:
    """``path`` with the given query parameters, percent-encoded (``None`` values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path
