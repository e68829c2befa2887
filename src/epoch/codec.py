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

Tags (dynamic consistency boundaries): a class's ``event_tags`` templates and the codec's ``tags``
function derive each event's tags on encode (:mod:`epoch._tags`).

What ``encode`` writes, ``decode`` reads (guarantee 12): ``encode`` decodes the bytes it wrote with the
class's own decoder and compares, so an event that would not read back as an equal value (NaN or
infinity, which JSON writes as ``null``; a float in an int field; an int too large for a float field; a
value outside a ``msgspec.Meta`` constraint; a tuple in an ``Any`` field) raises :class:`InvalidEvent`
naming the field (``$.amount``) instead of bricking its stream. Metadata is a plain JSON object: its
values go through JSON's own mapping (a UUID or a datetime becomes a str, a tuple a list) but must then
read back as that JSON, so NaN, infinity and non-str keys are refused there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec

from epoch._roundtrip import VERSION_KEY, _data_problem, _encode_metadata, _equal, _preview, _pydantic_equal, _reason
from epoch._tags import tagger_for
from epoch.errors import ConfigurationError, DecodeError, InvalidEvent, KeyNotLoaded, UnknownEventType
from epoch.records import EventEnvelope, NewEvent, RecordedEvent, uuid4s

if TYPE_CHECKING:
    from epoch.personal import KeyStore, PersonalFields

__all__ = ["Codec", "EventCodec", "Upcaster", "event_type_of", "event_version_of"]

E = TypeVar("E")

Upcaster = Callable[[dict[str, Any]], dict[str, Any] | tuple[str, dict[str, Any]]]
"""Turns a stored JSON object at version n into version n + 1: a dict, or ``(new_type, dict)`` to rename."""

_ENCODER = msgspec.json.Encoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])


class _Meta(msgspec.Struct):
    # Only the key the decoder needs: msgspec skips the others without building them.
    event_version: Annotated[int, msgspec.Meta(ge=1)] = msgspec.field(default=1, name=VERSION_KEY)


_META = msgspec.json.Decoder(_Meta)

# What msgspec raises on stored bytes that are not the JSON asked for: its own errors, and for invalid
# UTF-8 inside a string or nesting deeper than the interpreter's stack, Python's (DESIGN guarantee 8).
_BAD_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_BAD_STORED = (*_BAD_JSON, TypeError)  # TypeError: a stored value that is not bytes (a row edited by hand)


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
    same: Callable[[Any, Any], bool]
    """A fast check that a decoded event equals the original; ``False`` sends it to the careful check."""
    msgspec_kind: bool
    """Encoded by msgspec (dataclass, Struct), so msgspec can tell which field it cannot encode."""


def _entry(cls: object) -> _Entry:
    if not isinstance(cls, type):
        raise ConfigurationError(f"event classes must be classes, not {cls!r}")
    if issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls):
        to_json: Callable[[Any], bytes] = _ENCODER.encode
        from_json: Callable[[bytes], Any] = msgspec.json.Decoder(cls).decode
        same, msgspec_kind = _equal, True
    elif hasattr(cls, "model_validate_json") and hasattr(cls, "model_dump_json"):  # pydantic, not imported
        from_json = cls.model_validate_json

        def to_json(event: Any) -> bytes:
            return event.model_dump_json(by_alias=True).encode()  # type: ignore[no-any-return]

        same, msgspec_kind = _pydantic_equal, False
    else:
        raise ConfigurationError(f"{cls.__qualname__} must be a dataclass, a msgspec.Struct or a pydantic model")
    return _Entry(cls, event_type_of(cls), event_version_of(cls), to_json, from_json, same, msgspec_kind)


class Codec(Generic[E]):
    """The JSON codec for a fixed set of event classes, with upcasters for their older versions.

    ``event_types`` holds every stored type name it decodes: the registered ones and those upcast from.
    Raises :class:`ConfigurationError` for two classes with one type name, or an upcaster that cannot
    apply (its version is not older than the registered class). Encoders and decoders are built once.
    Annotate the union when the classes are unrelated: ``codec: Codec[AccountEvent] = Codec([...])``.
    """

    __slots__ = ("_by_class", "_by_type", "_last_meta", "_personal", "_tagger", "_upcasters", "event_types", "keys")

    def __init__(
        self,
        event_classes: Iterable[type[E]],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
        tags: Callable[[E], Iterable[str]] | None = None,
        *,
        keys: KeyStore | None = None,
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
        self._last_meta: tuple[bytes, int] = (b"", 1)  # decode_data's last metadata and its version
        self._tagger = tagger_for(self._by_class, tags)  # the classes' event_tags and ``tags`` (epoch._tags)
        # Personal data (docs/personal-data.md): marked classes get sealing/opening JSON functions.
        self.keys = keys
        """The :class:`~epoch.personal.KeyStore` personal fields are sealed with, or ``None``."""
        self._personal: dict[type, PersonalFields] = {}
        if keys is not None:
            from epoch.personal import seal_entries

            self._personal = seal_entries(self._by_type, self._by_class, keys)

    def encode(self, event: E, metadata: Mapping[str, Any] | None = None, id: UUID | None = None) -> NewEvent:
        """A :class:`NewEvent` for ``event``; raises :class:`InvalidEvent` for an unregistered class.

        ``metadata`` is merged into the JSON metadata; the codec owns ``$event_version`` and replaces any
        value given for it. The id is a fresh UUID4 unless ``id`` is given. An event or metadata that
        would not decode back to an equal value raises :class:`InvalidEvent` naming the field (guarantee 12).
        """
        entry = self._by_class.get(type(event))
        if entry is None:
            raise InvalidEvent("", 0, f"{type(event).__qualname__} is not registered with the codec")
        data = _encode_data(entry, event)
        encoded_meta = _encode_metadata(entry.type, entry.version, metadata)
        if self._personal and (personal := self._personal.get(entry.cls)) is not None:
            encoded_meta = personal.mark(event, encoded_meta)
        new = NewEvent(entry.type, data, encoded_meta) if id is None else NewEvent(entry.type, data, encoded_meta, id)
        return new if self._tagger is None else self._tagger.tagged(new, event)

    def _encode_all(
        self, events: Sequence[E], metadata: Mapping[str, Any] | None, ids: Sequence[UUID]
    ) -> list[NewEvent]:
        metas: dict[int, bytes] = {}  # the metadata encoded (and checked) once per schema version
        encoded = []
        for index, (event, id) in enumerate(zip(events, ids, strict=True)):
            if (entry := self._by_class.get(type(event))) is None:
                raise InvalidEvent("", index, f"{type(event).__qualname__} is not registered with the codec")
            try:
                data = _encode_data(entry, event)
                if (meta := metas.get(entry.version)) is None:
                    meta = metas[entry.version] = _encode_metadata(entry.type, entry.version, metadata)
            except InvalidEvent as exc:
                raise InvalidEvent("", index, exc.reason) from exc
            if self._personal and (personal := self._personal.get(entry.cls)) is not None:
                meta = personal.mark(event, meta)
            new = NewEvent(entry.type, data, meta, id)
            encoded.append(new if self._tagger is None else self._tagger.tagged(new, event, index))
        return encoded

    def decode(self, recorded: RecordedEvent) -> EventEnvelope[E]:
        """The decoded event in an envelope; ``type`` is the registered type name after any renaming."""
        metadata: dict[str, Any] = {}
        if recorded.metadata:
            try:
                metadata = _OBJECT.decode(recorded.metadata)
            except _BAD_STORED as exc:
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
            tags=recorded.tags,
        )

    def decode_data(self, recorded: RecordedEvent) -> E:
        """Only the domain event, without building the metadata dict (the fast path for folding).

        Of the metadata it reads only ``$event_version``: what it skips is not checked (``decode`` is).
        """
        version = 1
        if metadata := recorded.metadata:
            last = self._last_meta
            if metadata == last[0]:  # the events of one append share their metadata: read it once
                version = last[1]
            else:
                try:
                    version = _META.decode(metadata).event_version
                except _BAD_STORED as exc:
                    raise DecodeError(*_where(recorded), f"bad metadata: {_reason(exc)}") from exc
                self._last_meta = (metadata, version)  # one tuple: threads read old or new, never half
        entry = self._by_type.get(recorded.type)
        if entry is not None and entry.version == version:
            try:  # _from_json inlined: one Python call less per event of a fold
                return entry.from_json(recorded.data)  # type: ignore[no-any-return]
            except KeyNotLoaded as exc:
                raise KeyNotLoaded(exc.subject, *_where(recorded)) from None
            except Exception as exc:
                raise DecodeError(*_where(recorded), _reason(exc)) from exc
        return self._upcast(recorded, version)[1]

    def _from_json(self, entry: _Entry, recorded: RecordedEvent) -> E:
        try:
            return entry.from_json(recorded.data)  # type: ignore[no-any-return]
        except KeyNotLoaded as exc:  # not a bad payload: the caller preloads and decodes again
            raise KeyNotLoaded(exc.subject, *_where(recorded)) from None
        except Exception as exc:  # msgspec, pydantic or a user's __post_init__: all mean a bad payload
            raise DecodeError(*_where(recorded), _reason(exc)) from exc

    def _upcast(self, recorded: RecordedEvent, version: int) -> tuple[str, E]:
        name = recorded.type
        if name not in self._by_type and (name, version) not in self._upcasters:
            raise UnknownEventType(*_where(recorded))
        try:
            payload = _OBJECT.decode(recorded.data)
        except _BAD_STORED as exc:
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
                    raise DecodeError(
                        *_where(recorded),
                        f"upcaster {key!r} returned {_preview(result)}, not a dict or a (type name, dict) pair",
                    )
            version += 1
        try:
            return entry.type, entry.from_json(_ENCODER.encode(payload))
        except KeyNotLoaded as exc:
            raise KeyNotLoaded(exc.subject, *_where(recorded)) from None
        except Exception as exc:
            raise DecodeError(*_where(recorded), f"after upcasting to version {version}: {_reason(exc)}") from exc


def encode_events(
    codec: EventCodec[E], events: Sequence[E], metadata: Mapping[str, Any] | None, ids: Sequence[UUID] | None = None
) -> list[NewEvent]:
    """``codec.encode`` of each event with ``metadata`` and the id at its index in ``ids``; the handler's
    batch encoder. For a :class:`Codec` and several events the metadata is encoded (and checked) once per
    schema version, not once per event, and missing ids come from one :func:`~epoch.records.uuid4s` call.
    :class:`InvalidEvent` carries the index of the event it refuses (no stream: the caller knows it)."""
    if isinstance(codec, Codec) and len(events) > 1:  # one event: encode() itself is the fastest
        return codec._encode_all(events, metadata, uuid4s(len(events)) if ids is None else ids)
    encoded = []
    for index, event in enumerate(events):
        try:
            encoded.append(codec.encode(event, metadata=metadata, id=None if ids is None else ids[index]))
        except InvalidEvent as exc:
            raise InvalidEvent("", index, exc.reason) from exc
    return encoded


def _encode_data(entry: _Entry, event: Any) -> bytes:
    data: bytes | None = None
    cause: Exception | None = None
    try:
        data = entry.to_json(event)
        # Guarantee 12. Dataclasses and Structs check nothing at construction (any field may hold NaN, a
        # float in an int field, a value outside a msgspec.Meta constraint) and pydantic accepts NaN and
        # unchecked assignments, so only the class's own decoder can say what reads back: decode and
        # compare. About one decode per event (docs/concepts.md), far less than the append that follows.
        if entry.same(entry.from_json(data), event):
            return data
    except (KeyNotLoaded, InvalidEvent):  # personal data: no key to seal with, or a bad subject
        raise
    except Exception as exc:  # msgspec, pydantic, or a user's serializer, __post_init__ or __eq__
        cause = exc
    problem = _data_problem(entry, event, data, cause)
    if problem is not None:
        raise InvalidEvent("", 0, f"cannot encode {entry.type!r}: {problem}") from cause
    assert data is not None  # an encoder error is always a problem
    return data


def _where(recorded: RecordedEvent) -> tuple[str, int, str]:
    return recorded.stream, recorded.version, recorded.type
