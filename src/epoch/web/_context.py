"""What the explorer's page handlers work with: the app's state, the templates, the request parameters
they parse (numbers, instants), and the small pieces a page shows (a correlation chain, a change list)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from epoch import (
    EventStore,
    KeyStore,
    RecordedEvent,
)
from epoch.personal import shown_record
from epoch.projections import format_duration
from epoch.stores import keys_of
from epoch.web._apps import Registered
from epoch.web._diff import Change, diff, path_text, to_tree, value_text
from epoch.web._index import LogIndex
from epoch.web._views import EventView, event_view, link

__all__ = [
    "ACTIVITY_MINUTES",
    "CHAIN_INDENTS",
    "CHAIN_LIMIT",
    "ChainNode",
    "ChainRow",
    "Explorer",
    "HERE",
    "MAX_ACTIVITY_MINUTES",
    "MAX_NUMBER",
    "MAX_PAGE_SIZE",
    "PAGE_SIZE",
    "PREVIEW_LIMIT",
    "_chain",
    "_changes",
    "_describe",
    "_explorer",
    "_instant",
    "_int",
    "_oneline",
    "_required",
    "_stream_pages",
    "_version_at",
    "_when",
    "templates",
]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CHAIN_LIMIT = 500
CHAIN_INDENTS = 12
"""The levels a correlation chain indents, one CSS class each (the CSP allows no inline style); a row
deeper than that stays at the last indent and says its depth."""
MAX_NUMBER = 2**64
"""The largest number a query parameter takes (versions and positions are 64-bit in every store): a
larger one is a 400, and a page never builds a link from a number of thousands of digits."""
ACTIVITY_MINUTES = 60
MAX_ACTIVITY_MINUTES = 24 * 60
PREVIEW_LIMIT = 160


@dataclass
class Explorer:
    """What the pages read: the open store, the log index and what ``--app`` registered."""

    store: EventStore
    index: LogIndex
    registered: Registered

    async def shown(self, event: RecordedEvent) -> RecordedEvent:
        """``event`` as the pages show it: personal fields (docs/personal-data.md) as "encrypted" or, once
        their subject is forgotten, "erased"; never their ciphertext or plaintext."""
        if keys_of(self.store) is None:
            return event
        return await shown_record(KeyStore.for_store(self.store), event)


@dataclass
class ChainNode:
    """One event of a correlation chain, with the events it caused."""

    view: EventView
    parent_in_chain: bool = False
    children: list[ChainNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One line of a correlation chain as shown: an event, how many causes deep it is, and its indent."""

    depth: int
    node: ChainNode

    @property
    def indent(self) -> int:
        return min(self.depth, CHAIN_INDENTS)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template is HTML: names, data and errors are escaped everywhere
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["link"] = link
    env.filters["when"] = _when
    env.filters["duration"] = format_duration
    env.filters["oneline"] = _oneline
    env.filters["path"] = path_text
    env.filters["value"] = value_text
    return Jinja2Templates(env=env)


def _when(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds")


_LINE_END = re.compile(r"\r\n?|\n")


def _oneline(text: str) -> str:
    """Pretty JSON on one line (line ends and the indentation after them dropped), cut for a preview.

    JSON ends a line at CR or LF only: any other character ``str.splitlines()`` splits at (U+2028, U+0085,
    \\x0b...) is inside a string, kept as it is.
    """
    line = " ".join(part.strip(" \t") for part in _LINE_END.split(text))
    return line if len(line) <= PREVIEW_LIMIT else line[:PREVIEW_LIMIT] + "…"


def _instant(request: Request, name: str) -> datetime | None:
    """An ISO-8601 instant with a time zone (``2026-12-01T10:00:00Z``), or ``None`` when not given."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return None
    example = "e.g. 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an ISO-8601 instant ({example}), not {raw!r}") from None
    if value.utcoffset() is None:
        raise HTTPException(400, f"{name} must name its time zone ({example}), not {raw!r}")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC: no datetime holds it
        raise HTTPException(400, f"{name} is out of range in UTC, not {raw!r}") from None


def _int(request: Request, name: str, default: int | None, minimum: int = 0, maximum: int = MAX_NUMBER) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        low_only = value < minimum and maximum == MAX_NUMBER
        bounds = f"at least {minimum}" if low_only else f"between {minimum} and {maximum}"
        raise HTTPException(400, f"{name} must be {bounds}, not {value}")
    return value


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if value == "":
        raise HTTPException(400, f"the query parameter {name!r} is required")
    return value


def _explorer(request: Request) -> Explorer:
    explorer: Explorer = request.app.state.explorer
    return explorer


def _changes(before: object, after: object) -> list[Change] | None:
    """What changed from ``before`` to ``after``; ``None`` when a state cannot be turned into a tree."""
    try:
        return diff(to_tree(before), to_tree(after))
    except (ValueError, TypeError, RecursionError):
        return None


def _chain(members: list[RecordedEvent]) -> list[ChainRow]:
    """The events of one correlation, each under its cause (``$causation_id``), in log order: one row per
    event, depth first, with its depth. Built without recursion, so a chain of :data:`CHAIN_LIMIT` causes
    in a row is as good as a flat one; events that cause one another in a loop (stored metadata is
    anyone's) have no root, so each loop starts at its first event: every member is shown once."""
    nodes = {m.id: ChainNode(event_view(m)) for m in sorted(members, key=lambda m: m.position)}
    by_text = {str(i): node for i, node in nodes.items()}
    roots = []
    for node in nodes.values():
        parent = by_text.get(node.view.causation_id or "")
        if parent is not None and parent is not node:
            node.parent_in_chain = True
            parent.children.append(node)
        else:
            roots.append(node)
    rows: list[ChainRow] = []
    shown: set[int] = set()
    for start in [*roots, *nodes.values()]:
        stack = [(0, start)]
        while stack:
            depth, node = stack.pop()
            if id(node) in shown:
                continue
            shown.add(id(node))
            rows.append(ChainRow(depth, node))
            stack.extend((depth + 1, child) for child in reversed(node.children))
    return rows


def _describe(decider: object) -> str:
    kind = type(decider).__name__
    decide = getattr(decider, "decide", None)
    module = getattr(decide, "__module__", None) or type(decider).__module__
    return f"{kind} ({module})"


async def _stream_pages(
    explorer: Explorer, stream: str, shown: list[int], from_version: int, size: int, version: int | None
) -> tuple[int | None, int | None]:
    """Where the stream page's "older" and "newer" links start (``None``: no link), for a page that showed
    the versions ``shown`` of ``stream``, whose last version is ``version``.

    They go on from the versions shown, not from ``from_version``: a truncated or limited stream reads
    from a later version than asked, and ``from_version + size`` would show the same events again."""
    if not shown:
        return (max(0, from_version - size) if from_version > 0 else None), None
    newer = shown[-1] + 1 if version is not None and shown[-1] < version else None
    older = None
    if shown[0] > 0:
        start = None
        async for recorded in explorer.store.read_stream(stream, limit=1):  # where reads start; read to its end
            start = recorded.version
        if start is not None and start < shown[0]:
            older = max(start, shown[0] - size)
    return older, newer


async def _version_at(explorer: Explorer, stream: str, at: datetime) -> int:
    """The version state_at(at=...) stops at: the last before the first event recorded after ``at``."""
    version: int | None = None
    async for recorded in explorer.store.read_stream(stream):
        if recorded.recorded_at > at:
            break
        version = recorded.version
    if version is None:
        first_at = ""
        async for recorded in explorer.store.read_stream(stream, limit=1):
            first_at = f": its first event was recorded at {_when(recorded.recorded_at)}"
        raise HTTPException(404, f"{stream} has no event recorded at or before {_when(at)}{first_at}")
    return version
