"""How the codec derives an event's tags (dynamic consistency boundaries, DESIGN §8).

Two sources, combined in this order and de-duplicated: the class's ``event_tags``, a ``ClassVar`` of
templates naming the event's fields (``event_tags = ("user:{user_id}", "username:{username}")``, formatted
with ``str.format``, so ``{amount:03d}`` works too), and the codec's ``tags`` function
(``Codec(classes, tags=lambda event: ...)``), which returns an iterable of strings. A template that names
no field of its class is refused when the codec is built; a tag that is not valid (the rules of an event
type name) or a function that raises is refused on encode with :class:`~epoch.errors.InvalidEvent`.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from epoch.errors import ConfigurationError, InvalidEvent
from epoch.queries import check_tags
from epoch.records import NewEvent

__all__ = ["TagsOf", "Tagger", "tagger_for"]

TagsOf = Callable[[Any], Iterable[str]]
"""A function from a domain event to its tags (the codec's ``tags=``)."""


def _field_names(cls: type) -> frozenset[str]:
    if issubclass(cls, msgspec.Struct):
        return frozenset(field.name for field in msgspec.structs.fields(cls))
    if dataclasses.is_dataclass(cls):
        return frozenset(field.name for field in dataclasses.fields(cls))
    return frozenset(getattr(cls, "model_fields", {}))  # pydantic


def _templates(cls: type) -> tuple[str, ...]:
    """``cls.event_tags``, checked: strs whose every replacement field is a field of ``cls``."""
    templates = getattr(cls, "event_tags", ())
    if isinstance(templates, str) or not isinstance(templates, (tuple, list)):
        raise ConfigurationError(f"{cls.__qualname__}.event_tags must be a tuple of str templates, not {templates!r}")
    fields = _field_names(cls)
    for template in templates:
        if type(template) is not str:
            raise ConfigurationError(f"{cls.__qualname__}.event_tags holds {template!r}, not a str template")
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ConfigurationError(f"{cls.__qualname__}.event_tags: {template!r} is not a template: {exc}") from None
        for name in names:
            if name not in fields:
                raise ConfigurationError(
                    f"{cls.__qualname__}.event_tags: {template!r} names {name!r}, which is not a field of the class"
                )
    return tuple(templates)


class _Fields(Mapping[str, Any]):
    """An event's fields as the mapping ``str.format_map`` reads."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event

    def __getitem__(self, name: str) -> Any:
        return getattr(self.event, name)

    def __iter__(self) -> Any:  # pragma: no cover - format_map only looks names up
        return iter(())

    def __len__(self) -> int:  # pragma: no cover
        return 0


class Tagger:
    """The tags of the events of one codec: each class's templates, then the codec's function."""

    __slots__ = ("_function", "_templates")

    def __init__(self, templates: dict[type, tuple[str, ...]], function: TagsOf | None) -> None:
        self._templates = templates
        self._function = function

    def tagged(self, new: NewEvent, event: Any, index: int = 0) -> NewEvent:
        """``new`` carrying the tags of ``event``; :class:`InvalidEvent` (at ``index``) for a bad one."""
        tags: list[Any] = []
        try:
            fields = _Fields(event)
            tags += [template.format_map(fields) for template in self._templates.get(type(event), ())]
            if self._function is not None:
                found = self._function(event)
                if isinstance(found, (str, bytes)) or not isinstance(found, Iterable):
                    raise TypeError(f"the tags function returned {type(found).__name__}, not an iterable of str")
                tags += found
        except Exception as exc:  # a user's function, or a field's __format__
            raise InvalidEvent("", index, f"cannot tag {new.type!r}: {type(exc).__name__}: {exc}") from exc
        checked = check_tags(tags)
        if type(checked) is str:
            raise InvalidEvent("", index, f"cannot tag {new.type!r}: {checked}")
        return msgspec.structs.replace(new, tags=checked) if checked else new


def tagger_for(classes: Iterable[type], function: TagsOf | None) -> Tagger | None:
    """The codec's tagger, or ``None`` when no class declares ``event_tags`` and there is no function
    (then encoding does nothing more than before tags existed)."""
    if function is not None and not callable(function):
        raise ConfigurationError(f"tags must be a function from an event to its tags, not {function!r}")
    templates = {cls: found for cls in classes if (found := _templates(cls))}
    if not templates and function is None:
        return None
    return Tagger(templates, function)
