"""What a handler returns and carries: ``ExecuteResult``, ``LoadedState``, the ``Job`` of one ``execute``
call, and the envelopes of the events an append wrote (shared by ``CommandHandler`` and ``DecisionHandler``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

import msgspec

from epoch.records import AppendResult, EventEnvelope, NewEvent

__all__ = ["ExecuteResult", "Job", "LoadedState", "written_envelopes"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")

_METADATA = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class ExecuteResult(Generic[S, E]):
    """What ``execute`` did: the events written (empty if nothing to do) and the state after them."""

    stream: str
    version: int | None
    position: int
    events: list[EventEnvelope[E]]
    state: S
    attempts: int = 1
    """How many times the command was decided (more than 1 after concurrent writes)."""


class LoadedState(NamedTuple, Generic[S]):
    """A stream's current state and version (``None`` for a new stream); unpacks as a tuple."""

    state: S
    version: int | None


@dataclass(slots=True, eq=False)
class Job(Generic[C]):
    """One ``execute`` call, checked and ready to decide; ``decisions`` counts its runs of ``decide``,
    ``conflicts`` its appends a concurrent write refused (both read by telemetry, also when it fails)."""

    command: C
    services: object
    command_id: str | UUID | None
    watch: UUID | None  # the id of the command's first event, when it has a command id
    metadata: dict[str, Any]
    decisions: int = 0
    conflicts: int = 0


def written_envelopes(
    stream: str, events: list[E], new_events: list[NewEvent], appended: AppendResult
) -> list[EventEnvelope[E]]:
    """The envelopes of ``events`` (encoded as ``new_events``) once one append to ``stream`` wrote them."""
    assert appended.version is not None and appended.recorded_at is not None  # events were written
    first_version = appended.version - len(events) + 1
    return [
        EventEnvelope(
            stream,
            first_version + index,
            appended.positions[index],
            new_event.id,
            new_event.type,
            event,
            _METADATA.decode(new_event.metadata) if new_event.metadata else {},
            appended.recorded_at,
            new_event.tags,
        )
        for index, (event, new_event) in enumerate(zip(events, new_events, strict=True))
    ]
