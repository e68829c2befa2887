"""Which fields of an event class are personal, and sealing and opening them in its JSON.

The codec wraps a marked class's JSON encoder and decoder (``Codec(classes, keys=keys)``): the encoder
writes the event as usual, then replaces each personal field's value in the JSON object with its sealed
form (:mod:`.cipher`: the field's JSON encrypted under its subject's newest key); the decoder opens
them again before the class's own decoder runs. So the codec's round-trip check (guarantee 12) still
compares a decrypted event with the one given, and upcasters, renames and validation work unchanged.

A field whose key is erased (forgotten) decodes to the field's default, or ``None`` when it has none:
the class's decoder sees the default (or ``None``) when it accepts it, else the sealed string as a
stand-in, which is then replaced without validation (``dataclasses.replace``, ``msgspec.structs.replace``,
pydantic's ``model_copy``), so a plain ``str`` field reads as ``None`` after a forget.

The subject's id is the subject field's JSON value (a str as it is, an int or a UUID as its JSON text);
it stays in clear in the event and in the ``$personal`` metadata key (each subject of the event with the
id of its key, so a batch's keys load without decrypting anything).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from epoch.errors import ConfigurationError, InvalidEvent, KeyNotLoaded
from epoch.personal.cipher import CipherFailed, open_value, parse, seal_value
from epoch.personal.keystore import KeyStore, check_subject
from epoch.personal.marker import Personal

__all__ = ["SUBJECTS_KEY", "PersonalFields", "seal_entries"]

SUBJECTS_KEY = "$personal"
"""The reserved metadata key mapping the subjects of an event's personal fields to the ids of the keys
they are sealed under (``{"7f3a": ["9c04d1e2a7b35f60"]}``)."""

_ENCODER = msgspec.json.Encoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_VALUE = msgspec.json.Decoder()
_MISSING: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    attribute: str
    stored: str  # the name in the JSON object (a msgspec rename, a pydantic alias)
    subject_attribute: str
    subject_stored: str
    redacted: Callable[[], Any]  # the default (a fresh one from a factory), or None
    has_default: bool


def _stored_names(cls: type) -> dict[str, tuple[str, Callable[[], Any] | None]]:
    """attribute -> (its name in the JSON, a callable giving its default or ``None`` when it has none)."""
    found: dict[str, tuple[str, Callable[[], Any] | None]] = {}
    if issubclass(cls, msgspec.Struct):
        for info in msgspec.structs.fields(cls):
            default: Callable[[], Any] | None = None
            if info.default is not msgspec.NODEFAULT:
                default = (lambda value: lambda: value)(info.default)
            elif info.default_factory is not msgspec.NODEFAULT:
                default = info.default_factory
            found[info.name] = (info.encode_name, default)
    elif dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            default = None
            if field.default is not dataclasses.MISSING:
                default = (lambda value: lambda: value)(field.default)
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory
            found[field.name] = (field.name, default)
    else:  # pydantic (not imported)
        model_fields: dict[str, Any] = getattr(cls, "model_fields", {})
        for name, model_field in model_fields.items():
            default = None
            if not model_field.is_required():
                default = (lambda f: lambda: f.get_default(call_default_factory=True))(model_field)
            found[name] = (model_field.alias or name, default)
    return found


def _none() -> None:
    return None


def _replace(event: Any, changes: dict[str, Any]) -> Any:
    if isinstance(event, msgspec.Struct):
        return msgspec.structs.replace(event, **changes)
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return dataclasses.replace(event, **changes)
    return event.model_copy(update=changes)  # pydantic


def _subject_of(value: object) -> str:
    return value if type(value) is str else _ENCODER.encode(value).decode("utf-8")


class PersonalFields:
    """The personal fields of one event class, sealed and opened with one :class:`KeyStore`."""

    __slots__ = ("_fields", "event_type", "keys")

    def __init__(self, event_type: str, fields: list[_Field], keys: KeyStore) -> None:
        self.event_type = event_type
        self._fields = fields
        self.keys = keys

    @classmethod
    def of(cls, event_class: type, event_type: str, keys: KeyStore) -> PersonalFields | None:
        """The personal fields of ``event_class``, or ``None`` when it marks none; raises
        :class:`ConfigurationError` for a subject that names no field or names a personal one."""
        try:
            hints = typing.get_type_hints(event_class, include_extras=True)
        except Exception as exc:  # a name the annotations use is not in the class's module
            raise ConfigurationError(
                f"cannot read the annotations of {event_class.__qualname__} (to find Personal fields): {exc}"
            ) from exc
        marked = {
            name: marker
            for name, hint in hints.items()
            if typing.get_origin(hint) is Annotated
            for marker in hint.__metadata__
            if isinstance(marker, Personal)
        }
        if not marked:
            return None
        names = _stored_names(event_class)
        fields = []
        for name, marker in marked.items():
            where = f"{event_class.__qualname__}.{name}"
            if name not in names:
                raise ConfigurationError(f"{where} is marked Personal but is not a field")
            if marker.subject not in names:
                raise ConfigurationError(f"{where}: Personal(subject={marker.subject!r}) names no field")
            if marker.subject in marked:
                raise ConfigurationError(
                    f"{where}: its subject {marker.subject!r} is personal itself; the subject stays in clear "
                    "(use a surrogate id)"
                )
            stored, default = names[name]
            subject_stored = names[marker.subject][0]
            fields.append(_Field(name, stored, marker.subject, subject_stored, default or _none, default is not None))
        return cls(event_type, fields, keys)

    def subjects(self, event: Any) -> list[str]:
        """The subject ids of ``event``'s personal fields (for ``$personal``), in field order."""
        # As sealing sees them: the subject field's JSON value (a UUID as its str, not its JSON text).
        values = (msgspec.to_builtins(getattr(event, f.subject_attribute, None)) for f in self._fields)
        return list(dict.fromkeys(_subject_of(value) for value in values))

    def mark(self, event: Any, metadata: bytes) -> bytes:
        """``metadata`` (encoded JSON, maybe empty) with ``$personal`` mapping each of ``event``'s subjects
        to the id of the key its fields were just sealed under (the subject's newest)."""
        meta = _OBJECT.decode(metadata) if metadata else {}
        meta[SUBJECTS_KEY] = {subject: [self.keys.encryption_key(subject).key_id] for subject in self.subjects(event)}
        return _ENCODER.encode(meta)

    def sealing(self, to_json: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        """``to_json`` followed by sealing every personal field under its subject's newest key."""

        def seal(event: Any) -> bytes:
            payload = _OBJECT.decode(to_json(event))
            for field in self._fields:
                if field.stored not in payload:  # left out (omit_defaults): it decodes to its default
                    continue
                raw_subject = payload.get(field.subject_stored)
                if raw_subject is None:
                    raise InvalidEvent(
                        "",
                        0,
                        f"cannot encode {self.event_type!r}: $.{field.stored} is personal, its subject "
                        f"$.{field.subject_stored} is missing or null",
                    )
                subject = _subject_of(raw_subject)
                try:
                    check_subject(subject)
                except InvalidEvent as exc:
                    raise InvalidEvent(
                        "", 0, f"cannot encode {self.event_type!r}: $.{field.subject_stored}: {exc.reason}"
                    ) from None
                key = self.keys.encryption_key(subject)
                plain = _ENCODER.encode(payload[field.stored])
                payload[field.stored] = seal_value(key.key_id, key.key, plain, subject, field.stored)
            return _ENCODER.encode(payload)

        return seal

    def opening(self, from_json: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """Open every personal field (or redact it when its key is erased), then ``from_json``."""

        def open_(data: bytes) -> Any:
            payload = _OBJECT.decode(data)
            redacted: dict[str, Any] = {}
            stand_ins: dict[str, Any] = {}
            for field in self._fields:
                value = payload.get(field.stored, _MISSING)
                try:
                    sealed = parse(value)
                except CipherFailed as exc:
                    raise ValueError(f"$.{field.stored}: {exc}") from None
                if sealed is None:  # written in clear (before the field was marked): read as it is
                    continue
                subject = _subject_of(payload.get(field.subject_stored))
                key = self.keys.decryption_key(subject, sealed[0])
                if key is None:
                    payload[field.stored] = field.redacted()
                    if not field.has_default:  # None may not be what the type accepts (module docs)
                        redacted[field.attribute] = None
                        stand_ins[field.stored] = value
                    continue
                try:
                    payload[field.stored] = _VALUE.decode(open_value(key, sealed[1], subject, field.stored))
                except CipherFailed as exc:
                    raise ValueError(f"$.{field.stored}: {exc}") from None
            if not stand_ins:
                return from_json(_ENCODER.encode(payload))
            try:
                return from_json(_ENCODER.encode(payload))
            except KeyNotLoaded:
                raise
            except Exception:  # the type refuses None (a plain str): decode a stand-in, then replace it
                payload.update(stand_ins)
                return _replace(from_json(_ENCODER.encode(payload)), redacted)

        return open_


def seal_entries(by_type: dict[str, Any], by_class: dict[type, Any], keys: KeyStore) -> dict[type, PersonalFields]:
    """Give the codec's entries (``_Entry``: ``cls``, ``type``, ``to_json``, ``from_json``) of classes that
    mark personal fields sealing and opening JSON functions, in place; their :class:`PersonalFields`."""
    found: dict[type, PersonalFields] = {}
    for entry in list(by_type.values()):
        if (fields := PersonalFields.of(entry.cls, entry.type, keys)) is not None:
            found[entry.cls] = fields
            sealed = dataclasses.replace(
                entry, to_json=fields.sealing(entry.to_json), from_json=fields.opening(entry.from_json)
            )
            by_type[entry.type] = by_class[entry.cls] = sealed
    return found
