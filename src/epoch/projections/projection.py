"""What a projection is: a named consumer of the ordered log, with filters and a failure policy.

A projection is any object with a ``name`` and one of

- ``async handle(envelope)`` — one event at a time (:class:`Projection`);
- ``async handle_batch(envelopes)`` — a batch at a time (:class:`BatchProjection`);
- ``async handle_in_transaction(envelope, tx)`` — exactly once, inside the store's transaction
  (:class:`~epoch.projections.transactional.TransactionalProjection`).

Optional members, read with defaults: ``categories`` (one name or several; ``None`` = all),
``event_types`` (type names, matched against the type as decoded, ``envelope.type``; see
:meth:`ProjectionSettings.wants`), ``policy`` (``"stop"``, the default, or ``"park"``) and ``reset()``
(clear the read model for a rebuild).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from epoch.errors import ConfigurationError, ProjectionFailed
from epoch.records import EventEnvelope, RecordedEvent
from epoch.streams import MAX_STREAM_NAME, check_name

__all__ = [
    "BatchProjection",
    "EventDecoder",
    "FailurePolicy",
    "Projection",
    "ProjectionFailed",
    "ProjectionKind",
    "ProjectionSettings",
    "kind_of",
    "settings_of",
    "upcast_sources",
]

FailurePolicy = Literal["stop", "park"]
"""What happens to an event that still fails after the retries: stop the projection, or park it."""

ProjectionKind = Literal["event", "batch", "transactional"]
"""Which handler a projection has: ``handle``, ``handle_batch`` or ``handle_in_transaction``."""


class Projection(Protocol):
    """Handles events one at a time. Delivery is at least once: use ``envelope.position`` to be idempotent."""

    @property
    def name(self) -> str: ...

    async def handle(self, envelope: EventEnvelope[Any]) -> None: ...


class BatchProjection(Protocol):
    """Handles a batch of events (in position order) at a time, e.g. one bulk write per batch."""

    @property
    def name(self) -> str: ...

    async def handle_batch(self, envelopes: Sequence[EventEnvelope[Any]]) -> None: ...


class EventDecoder(Protocol):
    """The part of :class:`epoch.codec.EventCodec` the read side needs."""

    def decode(self, recorded: RecordedEvent) -> EventEnvelope[Any]: ...


@dataclass(frozen=True, slots=True)
class ProjectionSettings:
    """A projection's optional members, normalised."""

    name: str
    kind: ProjectionKind
    categories: tuple[str, ...] | None
    event_types: frozenset[str] | None
    policy: FailurePolicy
    upcast_types: frozenset[str] = frozenset()
    """Stored type names the codec's upcasters read: their decoded type is known only after decoding."""
    decoder: EventDecoder | None = field(default=None, compare=False, repr=False)
    """The codec, for :meth:`handles` (lag counts); ``None`` when the settings were read without one."""

    def wants(self, recorded: RecordedEvent) -> bool:
        """Whether the event may be one the projection handles, before decoding: its stored type is in
        ``event_types``, or an upcaster of the codec reads that stored type (it may rename it). The
        others are skipped undecoded; what passes is decoded and then checked with :meth:`keeps`."""
        types = self.event_types
        return types is None or recorded.type in types or recorded.type in self.upcast_types

    def keeps(self, envelope: EventEnvelope[Any]) -> bool:
        """Whether the projection handles a decoded event that passed :meth:`wants`: its type as decoded
        (``envelope.type``, after any renaming upcaster) is in ``event_types``. Without upcasters a
        ``Codec`` decodes a stored type under its own name, so then this is :meth:`wants` again."""
        return self.event_types is None or not self.upcast_types or envelope.type in self.event_types

    def handles(self, recorded: RecordedEvent) -> bool:
        """:meth:`wants`, then :meth:`keeps` on the decoded event where the decoded type can differ (the
        lag count). An event that does not decode counts as handled: the projection will meet it."""
        if not self.wants(recorded):
            return False
        if self.event_types is None or recorded.type not in self.upcast_types or self.decoder is None:
            return True
        try:
            return self.keeps(self.decoder.decode(recorded))
        except Exception:
            return True


def upcast_sources(codec: object) -> frozenset[str]:
    """The stored type names that ``codec``'s upcasters read (any version), for a
    :class:`~epoch.codec.Codec`; empty for another decoder (its stored types are taken as decoded).

    ``Codec`` keeps its upcasters in the private ``_upcasters`` mapping, keyed ``(type name, version)``:
    this is the one place the read side looks at it.
    """
    upcasters = getattr(codec, "_upcasters", None)
    if not isinstance(upcasters, Mapping):
        return frozenset()
    return frozenset(key[0] for key in upcasters if isinstance(key, tuple) and key and isinstance(key[0], str))


def _names(value: object, what: str, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        names = tuple(value)
        if all(isinstance(n, str) for n in names):
            return names
    raise ConfigurationError(f"projection {name!r}: {what} must be a name or names, not {value!r}")


def kind_of(projection: object) -> ProjectionKind | None:
    """The projection's kind from the handler it has (``handle_in_transaction`` first, then
    ``handle_batch``, then ``handle``), or ``None`` when it has none."""
    if callable(getattr(projection, "handle_in_transaction", None)):
        return "transactional"
    if callable(getattr(projection, "handle_batch", None)):
        return "batch"
    if callable(getattr(projection, "handle", None)):
        return "event"
    return None


def settings_of(projection: object, codec: EventDecoder | None = None) -> ProjectionSettings:
    """Read a projection's members; raise ``ConfigurationError`` when it cannot be run. With the
    ``codec`` it is run with, its ``event_types`` also match events an upcaster renames (:meth:`~ProjectionSettings.wants`)."""
    name = getattr(projection, "name", None)
    if not isinstance(name, str):
        raise ConfigurationError(f"a projection needs a str name, got {name!r} on {projection!r}")
    if (problem := check_name(name, MAX_STREAM_NAME)) is not None:  # it keys checkpoints and parked events
        raise ConfigurationError(f"projection name {name!r} {problem}")
    kind = kind_of(projection)
    if kind is None:
        raise ConfigurationError(
            f"projection {name!r} needs handle(envelope), handle_batch(envelopes) or handle_in_transaction(envelope, tx)"
        )
    policy: FailurePolicy
    match getattr(projection, "policy", "stop"):
        case "stop":
            policy = "stop"
        case "park":
            policy = "park"
        case other:
            raise ConfigurationError(f"projection {name!r}: policy must be 'stop' or 'park', not {other!r}")
    types = _names(getattr(projection, "event_types", None), "event_types", name)
    return ProjectionSettings(
        name=name,
        kind=kind,
        categories=_names(getattr(projection, "categories", None), "categories", name),
        event_types=None if types is None else frozenset(types),
        policy=policy,
        upcast_types=upcast_sources(codec) if types is not None else frozenset(),
        decoder=codec,
    )
