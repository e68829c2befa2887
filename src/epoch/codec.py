"""Turning domain events into stored records and back, with schema versions and upcasting.

An event class is a ``dataclass``, a ``msgspec.Struct`` or a pydantic model. Its type name is the class
attribute ``event_type`` when present (a ``ClassVar[str]``), else the class name; its schema version is
``event_version`` (a ``ClassVar[int]``, default 1). The data is JSON. The version is stored in the
metadata as ``$event_version``, which is left out for version 1 (so a missing key means version 1).

Upcasting: ``upcasters[(type, n)]`` takes the stored JSON object of ``type`` at version ``n`` and returns
the object at version ``n + 1``, either as a dict (same type) or as a ``(new_type, dict)`` pair, which
renames the type; the version keeps counting (``("Credited", 1)`` may return ``("Deposited", dict)`` at
version 2, so the ``Deposited`` class then declares ``event_version = 2`` or more). Chains run
``n -> n + 1 -> ...`` until a registered class has the version reached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Annotated, Any, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec

from epoch.errors import ConfigurationError, DecodeError, InvalidEvent, UnknownEventType
from epoch.records import EventEnvelope, NewEvent, RecordedEvent

__all__ = ["Codec", "EventCodec", "Upcaster", "event_type_of", "event_version_of"]

E = TypeVar("E")

Upcaster = Callable[[dict[str, Any]], dict[str, Any] | tuple[str, dict[str, Any]]]
"""Turns a stored JSON object at version n into version n + 1: a dict, or ``(new_type, dict)`` to rename."""

VERSION_KEY = "$event_version"

_ENCODER = msgspec.json.Encoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])


class _Meta(msgspec.Struct):
    # Only the key the decoder needs: msgspec skips the others without building them.
    event_version: Annotated[int, msgspec.Meta(ge=1)] = msgspec.field(default=1, name=VERSION_KEY)


_META = msgspec.json.Decoder(_Meta)


class EventCodec(Protocol[E]):
    """Encodes domain events into :class:`NewEvent`s and decodes :class:`RecordedEvent`s back."""

    @property
    def event_types(self) -> AbstractSet[str]:
        """Every stored type name this codec decodes (so consumers can skip others before decoding)."""
        ...

    def encode(self, event: E, metadata: Mapping[str, Any] | None = None, id: UUID | None = None) -> NewEvent:
        """A :class:`NewEvent` for ``event``, with ``metadata`` merged into its JSON metadata."""
        ...

    def decode(self, recorded: RecordedEvent) -> EventEnvelope[E]:
        """The domain event with its record's fields and parsed metadata; raises :class:`DecodeError`."""
        ...

    def decode_data(self, recorded: RecordedEvent) -> E:
        """Only the domain event: the fast path for folding long streams; raises :class:`DecodeError`."""
        ...


def event_type_of(cls: type) -> str:
    """The type name of an event class: its ``event_type`` attribute, else its name."""
    name = getattr(cls, "event_type", cls.__name__)
    if type(name) is not str or not name or name != name.strip():
        raise ConfigurationError(f"{cls.__qualname__}.event_type must be a non-empty str ClassVar, not {name!r}")
    return name


def event_version_of(cls: type) -> int:
    """The schema version of an event class: its ``event_version`` attribute, else 1."""
    version = getattr(cls, "event_version", 1)
    if type(version) is not int or version < 1:
        raise ConfigurationError(f"{cls.__qualname__}.event_version must be an int >= 1, not {version!r}")
    return version


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    cls: type
    type: str
    version: int
    to_json: Callable[[Any], bytes]
    from_json: Callable[[bytes], Any]


def _entry(cls: object) -> _Entry:
    if not isinstance(cls, type):
        raise ConfigurationError(f"event classes must be classes, not {cls!r}")
    if issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls):
        to_json: Callable[[Any], bytes] = _ENCODER.encode
        from_json: Callable[[bytes], Any] = msgspec.json.Decoder(cls).decode
    elif hasattr(cls, "model_validate_json") and hasattr(cls, "model_dump_json"):  # pydantic, not imported
        from_json = cls.model_validate_json

        def to_json(event: Any) -> bytes:
            return event.model_dump_json(by_alias=True).encode()  # type: ignore[no-any-return]

    else:
        raise ConfigurationError(f"{cls.__qualname__} must be a dataclass, a msgspec.Struct or a pydantic model")
    return _Entry(cls, event_type_of(cls), event_version_of(cls), to_json, from_json)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Codec(Generic[E]):
    """The JSON codec for a fixed set of event classes, with upcasters for their older versions.

    ``event_types`` holds every stored type name it decodes: the registered ones and those upcast from.
    Raises :class:`ConfigurationError` for two classes with one type name, or an upcaster that cannot
    apply (its version is not older than the registered class). Encoders and decoders are built once.
    Annotate the union when the classes are unrelated: ``codec: Codec[AccountEvent] = Codec([...])``.
    """

    __slots__ = ("_by_class", "_by_type", "_upcasters", "event_types")

    def __init__(
        self, event_classes: Iterable[type[E]], upcasters: Mapping[tuple[str, int], Upcaster] | None = None
    ) -> None:
        self._by_type: dict[str, _Entry] = {}
        self._by_class: dict[type, _Entry] = {}
        for cls in event_classes:
            entry = _entry(cls)
            if (known := self._by_type.get(entry.type)) is not None:
                raise ConfigurationError(
                    f"{known.cls.__qualname__} and {cls.__qualname__} share the event type {entry.type!r}"
                )
            self._by_type[entry.type] = self._by_class[cls] = entry
        self._upcasters: dict[tuple[str, int], Upcaster] = dict(upcasters or {})
        for key in self._upcasters:
            match key:
                case (str() as name, int() as version) if version >= 1 and type(version) is int:
                    if (known := self._by_type.get(name)) is not None and known.version <= version:
                        raise ConfigurationError(
                            f"upcaster {key!r} never runs: {known.cls.__qualname__} is at version {known.version}"
                        )
                case _:
                    raise ConfigurationError(f"upcaster keys are (type name, version >= 1) pairs, not {key!r}")
        self.event_types: frozenset[str] = frozenset(self._by_type) | {name for name, _ in self._upcasters}

    def encode(self, event: E, metadata: Mapping[str, Any] | None = None, id: UUID | None = None) -> NewEvent:
        """A :class:`NewEvent` for ``event``; raises :class:`InvalidEvent` for an unregistered class.

        ``metadata`` is merged into the JSON metadata; the codec owns ``$event_version`` and replaces any
        value given for it. The id is a fresh UUID4 unless ``id`` is given.
        """
        entry = self._by_class.get(type(event))
        if entry is None:
            raise InvalidEvent("", 0, f"{type(event).__qualname__} is not registered with the codec")
        try:
            data = entry.to_json(event)
            meta = dict(metadata) if metadata else {}
            if entry.version == 1:
                meta.pop(VERSION_KEY, None)
            else:
                meta[VERSION_KEY] = entry.version
            encoded_meta = _ENCODER.encode(meta) if meta else b""
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise InvalidEvent("", 0, f"cannot encode {entry.type!r}: {_reason(exc)}") from exc
        if id is None:
            return NewEvent(entry.type, data, encoded_meta)
        return NewEvent(entry.type, data, encoded_meta, id)

    def decode(self, recorded: RecordedEvent) -> EventEnvelope[E]:
        """The decoded event in an envelope; ``type`` is the registered type name after any renaming."""
        metadata: dict[str, Any] = {}
        if recorded.metadata:
            try:
                metadata = _OBJECT.decode(recorded.metadata)
            except msgspec.DecodeError as exc:
                raise DecodeError(*_where(recorded), f"bad metadata: {_reason(exc)}") from exc
        version = metadata.get(VERSION_KEY, 1)
        if type(version) is not int or version < 1:
            raise DecodeError(*_where(recorded), f"bad {VERSION_KEY} {version!r}")
        entry = self._by_type.get(recorded.type)
        if entry is not None and entry.version == version:
            type_name, event = entry.type, self._from_json(entry, recorded)
        else:
            type_name, event = self._upcast(recorded, version)
        return EventEnvelope(
            stream=recorded.stream,
            version=recorded.version,
            position=recorded.position,
            id=recorded.id,
            type=type_name,
            data=event,
            metadata=metadata,
            recorded_at=recorded.recorded_at,
        )

    def decode_data(self, recorded: RecordedEvent) -> E:
        """Only the domain event, without building the metadata dict (the fast path for folding)."""
        version = 1
        if recorded.metadata:
            try:
                version = _META.decode(recorded.metadata).event_version
            except msgspec.DecodeError as exc:
                raise DecodeError(*_where(recorded), f"bad metadata: {_reason(exc)}") from exc
        entry = self._by_type.get(recorded.type)
        if entry is not None and entry.version == version:
            return self._from_json(entry, recorded)
        return self._upcast(recorded, version)[1]

    def _from_json(self, entry: _Entry, recorded: RecordedEvent) -> E:
        try:
            return entry.from_json(recorded.data)  # type: ignore[no-any-return]
        except Exception as exc:  # msgspec, pydantic or a user's __post_init__: all mean a bad payload
            raise DecodeError(*_where(recorded), _reason(exc)) from exc

    def _upcast(self, recorded: RecordedEvent, version: int) -> tuple[str, E]:
        name = recorded.type
        if name not in self._by_type and (name, version) not in self._upcasters:
            raise UnknownEventType(*_where(recorded))
        try:
            payload = _OBJECT.decode(recorded.data)
        except msgspec.DecodeError as exc:
            raise DecodeError(*_where(recorded), _reason(exc)) from exc
        while (entry := self._by_type.get(name)) is None or entry.version != version:
            upcaster = self._upcasters.get((name, version))
            if upcaster is None:
                if entry is not None and version > entry.version:
                    reason = f"version {version} is newer than {entry.cls.__qualname__} (version {entry.version})"
                else:
                    reason = f"no upcaster from {name!r} version {version}"
                raise DecodeError(*_where(recorded), reason)
            key = (name, version)
            try:
                result = upcaster(payload)
            except Exception as exc:
                raise DecodeError(*_where(recorded), f"upcaster {key!r} failed: {_reason(exc)}") from exc
            match result:
                case dict():
                    payload = result
                case (str() as name, dict() as payload):
                    pass
                case _:
                    raise DecodeError(*_where(recorded), f"upcaster {key!r} returned {result!r}, not a dict")
            version += 1
        try:
            return entry.type, entry.from_json(_ENCODER.encode(payload))
        except Exception as exc:
            raise DecodeError(*_where(recorded), f"after upcasting to version {version}: {_reason(exc)}") from exc


def _where(recorded: RecordedEvent) -> tuple[str, int, str]:
    return recorded.stream, recorded.version, recorded.type
