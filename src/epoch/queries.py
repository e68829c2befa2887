"""Queries over event types and tags, and the append conditions built from them (dynamic consistency
boundaries, as specified at dcb.events).

An event may carry tags (``NewEvent(..., tags=("user:42", "username:ada"))``). A :class:`Query` selects
events across streams::

    Query([QueryItem(types=("UserRegistered",), tags=("username:ada",))])  # that type with that tag
    Query([QueryItem(tags=("course:7",)), QueryItem(tags=("student:3",))])  # either tag
    Query.all()                                                              # every event
    Query([])                                                                # no event

An event matches an item when its type is among the item's ``types`` (or ``types`` is empty) and it
carries every tag of the item's ``tags``; it matches the query when it matches any item (and is
delivered once). ``store.read_query(query)`` reads the matching events in position order;
``store.append_with_condition(stream, events, AppendCondition(query, after))`` appends only if no event
matching ``query`` was recorded after position ``after`` (``None``: at all).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from epoch.errors import InvalidQuery
from epoch.streams import MAX_TYPE_NAME, check_name

__all__ = ["AppendCondition", "Query", "QueryItem", "check_tags"]


def _names(what: str, values: object) -> tuple[str, ...]:
    """``values`` as a de-duplicated tuple of valid names (the rules of an event type name)."""
    if isinstance(values, (str, bytes, bytearray)) or not isinstance(values, Iterable):
        raise InvalidQuery(f"{what} must be a tuple of strings, not {type(values).__name__}")
    names = tuple(dict.fromkeys(values))
    for name in names:
        problem = check_name(name, MAX_TYPE_NAME)
        if problem is not None:
            raise InvalidQuery(f"{what[:-1]} {name!r} {problem}")
    return names


def check_tags(tags: object) -> tuple[str, ...] | str:
    """An event's tags de-duplicated in their order, or (a ``str``) why they are not valid tags."""
    if type(tags) is tuple and not tags:
        return tags
    if isinstance(tags, (str, bytes, bytearray)) or not isinstance(tags, (tuple, list)):
        return f"tags must be a tuple of strings, not {type(tags).__name__}"
    for tag in tags:
        problem = check_name(tag, MAX_TYPE_NAME)
        if problem is not None:
            return f"tag {tag!r} {problem}"
    # A str subclass (a StrEnum member) is its value, as a plain str: every store reads back a str.
    return tuple(dict.fromkeys(tag if type(tag) is str else str.__str__(tag) for tag in tags))


@dataclass(frozen=True, slots=True)
class QueryItem:
    """Events of any of ``types`` (empty: any type) that carry all of ``tags`` (empty: no tag needed)."""

    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _names("types", self.types))
        object.__setattr__(self, "tags", _names("tags", self.tags))

    def matches(self, type: str, tags: Collection[str]) -> bool:
        """Whether an event of this ``type`` carrying ``tags`` matches this item."""
        if self.types and type not in self.types:
            return False
        return all(tag in tags for tag in self.tags)


@dataclass(frozen=True, slots=True)
class Query:
    """Events matching any of ``items``; ``Query([])`` matches nothing, :meth:`all` everything."""

    items: tuple[QueryItem, ...] = field(default=())

    def __init__(self, items: Iterable[QueryItem] = ()) -> None:
        if isinstance(items, QueryItem) or not isinstance(items, Iterable):
            raise InvalidQuery(f"a query takes an iterable of QueryItem, not {type(items).__name__}")
        chosen = tuple(dict.fromkeys(items))
        for item in chosen:
            if not isinstance(item, QueryItem):
                raise InvalidQuery(f"a query takes QueryItem items, not {type(item).__name__}")
        object.__setattr__(self, "items", chosen)

    @classmethod
    def all(cls) -> Query:
        """The query every event matches."""
        return cls([QueryItem()])

    @property
    def matches_everything(self) -> bool:
        """True when an item has neither types nor tags: every event matches."""
        return any(not item.types and not item.tags for item in self.items)

    @property
    def matches_nothing(self) -> bool:
        """True for ``Query([])``: a store answers it without touching storage."""
        return not self.items

    def matches(self, type: str, tags: Collection[str]) -> bool:
        """Whether an event of this ``type`` carrying ``tags`` matches the query."""
        return any(item.matches(type, tags) for item in self.items)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Append only if no event matching ``fail_if_events_match`` has a position greater than ``after``
    (``None``: only if no matching event exists at all)."""

    fail_if_events_match: Query
    after: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise InvalidQuery(f"fail_if_events_match must be a Query, not {type(self.fail_if_events_match).__name__}")
        after = self.after
        if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
            raise InvalidQuery(f"after must be None or a position >= 0, not {after!r}")
