"""How the SQLite store keeps event tags (schema version 2): a ``tags`` column on ``events`` to read them
back with the event, and the ``event_tags`` index to find events by tag (``read_query``, append conditions).

``events.tags`` holds an event's tags joined by U+001F (a control character, which no tag may contain,
so splitting gives back exactly the tuple written), and NULL for an untagged event, so reading one costs
nothing but a NULL column. ``event_tags (tag, position)`` is a ``WITHOUT ROWID`` table whose primary key
is the index: a tag's events are one range of it, in position order. ``events_type (type, position)``
does the same for query items that name types only. Both are written in the append's own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["INSERT_TAG", "MIGRATION", "SEPARATOR", "joined", "split", "tag_rows"]

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

SEPARATOR = "\x1f"
"""Between the tags of ``events.tags``: a control character (category Cc), which a tag never holds."""

INSERT_TAG = "INSERT INTO event_tags (tag, position) VALUES (?, ?)"


class _Tagged(Protocol):
    @property
    def tags(self) -> tuple[str, ...]: ...


def joined(tags: tuple[str, ...]) -> str | None:
    """The ``events.tags`` value of an event's (checked, de-duplicated) tags: NULL when it has none."""
    return SEPARATOR.join(tags) if tags else None


def split(column: str) -> tuple[str, ...]:
    """The tags of a non-NULL ``events.tags`` value, in the order written."""
    return tuple(column.split(SEPARATOR))


def tag_rows(events: Iterable[_Tagged], first_position: int) -> list[tuple[str, int]]:
    """The ``event_tags`` rows of events written at consecutive positions from ``first_position``."""
    return [(tag, position) for position, event in enumerate(events, first_position) for tag in event.tags]
