"""How the SQLite store indexes events for ``read_query`` and append conditions: by tag (schema version 2)
and by type (schema version 6).

``events.tags`` holds an event's tags joined by U+001F (a control character, which no tag may contain,
so splitting gives back exactly the tuple written), and NULL for an untagged event, so reading one costs
nothing but a NULL column. ``event_tags (tag, position)`` is a ``WITHOUT ROWID`` table whose primary key
is the index: a tag's events are one range of it, in position order. Both are written in the append's
own transaction.

Types (schema version 6). The type index ``events_type (type, position)`` holds one entry per type per
append, not one per event: a batch of 100 events of two types adds two entries (the cost of an index
entry per event was 5-9% of a 100-event append). The entry is the append's *last* event of that type,
whose ``events.type_first`` is the position of the append's first event of that type; the events of
the type in the append all lie between the two. ``type_first`` is NULL when that event is the only one
of its type in its append (every event of a one-event append, and every event written before schema
6), and 0 on the other events, which the partial index leaves out. A query item naming types walks the
index, then each entry's positions from ``type_first`` (``dcb``). Erasure deletes the oldest events of
a stream (``lifecycle``), and the events of one append are consecutive versions of one stream, so an
append's last event of a type outlives the others: no entry is ever lost while one of its events is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["INSERT_TAG", "MIGRATION", "MIGRATION_6", "SEPARATOR", "joined", "split", "tag_rows", "type_firsts"]

MIGRATION = (
    "ALTER TABLE events ADD COLUMN tags TEXT",
    """CREATE TABLE IF NOT EXISTS event_tags (
        tag      TEXT    NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (tag, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS events_type ON events (type, position)",
)
"""Migration 2: tags on events, the tag index and the type index."""

MIGRATION_6 = (
    "ALTER TABLE events ADD COLUMN type_first INTEGER",
    "DROP INDEX IF EXISTS events_type",
    "CREATE INDEX IF NOT EXISTS events_type ON events (type, position) WHERE type_first IS NOT 0",
)
"""Migration 6: the type index keeps one entry per type per append (see the module docs). Rebuilding it reads
every event once; the events written before stay as they are (``type_first`` NULL: one entry each)."""

SEPARATOR = "\x1f"
"""Between the tags of ``events.tags``: a control character (category Cc), which a tag never holds."""

INSERT_TAG = "INSERT INTO event_tags (tag, position) VALUES (?, ?)"


class _Tagged(Protocol):
    @property
    def tags(self) -> tuple[str, ...]: ...


class _Typed(Protocol):
    @property
    def type(self) -> str: ...


def joined(tags: tuple[str, ...]) -> str | None:
    """The ``events.tags`` value of an event's (checked, de-duplicated) tags: NULL when it has none."""
    return SEPARATOR.join(tags) if tags else None


def split(column: str) -> tuple[str, ...]:
    """The tags of a non-NULL ``events.tags`` value, in the order written."""
    return tuple(column.split(SEPARATOR))


def tag_rows(events: Iterable[_Tagged], first_position: int) -> list[tuple[str, int]]:
    """The ``event_tags`` rows of events written at consecutive positions from ``first_position``."""
    return [(tag, position) for position, event in enumerate(events, first_position) for tag in event.tags]


def type_firsts(events: Sequence[_Typed], first_position: int) -> list[int | None]:
    """The ``events.type_first`` of one append's events, written at consecutive positions from ``first_position``."""
    count = len(events)
    if count == 1:  # a one-event append (the command path): its own entry, as before schema 6
        return [None]
    types = [event.type for event in events]
    last = dict(zip(types, range(count), strict=True))  # each type's last index: later ones overwrite earlier ones
    if len(last) == 1:  # one type (the usual batch)
        return [*([0] * (count - 1)), first_position]
    first = dict(zip(reversed(types), range(count - 1, -1, -1), strict=True))  # each type's first index
    firsts: list[int | None] = [0] * count
    for name, end in last.items():
        start = first[name]
        firsts[end] = None if start == end else first_position + start
    return firsts
