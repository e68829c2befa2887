"""An in-process LRU of stream states for :class:`~epoch.commands.CommandHandler`.

:class:`CachedState` is also the state the handler's attempt loop decides on. A cached entry is only a starting point: the handler still reads the events after the cached version,
and the append is guarded by the version it ended on, so another process's writes are never missed, and by
the version it started from, so events truncated or erased by anyone are never decided on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from epoch.errors import ConfigurationError

__all__ = ["CachedState", "StateCache"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class CachedState(Generic[S]):
    """A stream's state after ``version`` (whose event is at ``position``; ``None`` and 0 for a new stream).

    What the handler decides on and keeps in its cache; the position lets a later read check that the
    event at ``version`` is still the one the state was folded from. (``CommandHandler.load`` returns the
    public two-field view, :class:`~epoch.commands.LoadedState`, which unpacks as ``state, version``.)
    """

    state: S
    version: int | None
    position: int
    first_version: int = 0
    """The version of the first event folded into ``state``: appends made on this state are refused once
    the stream no longer starts there (a truncation, a hard delete or a scavenge by anyone; DESIGN §8)."""
    generation: int = 0
    """The key generation (:attr:`~epoch.KeyStore.generation`) its events were decoded under: a state
    folded before a forget the handler has seen is never cached, carried or decided on (epoch/_forget.py)."""


class StateCache(Generic[S]):
    """A bounded LRU mapping stream name -> :class:`CachedState`. Not shared across processes.

    ``max_entries`` is an int >= 1 (not a bool); anything else raises :class:`~epoch.errors.ConfigurationError`.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ConfigurationError(f"StateCache(max_entries=...) must be an int >= 1, not {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedState[S]] = OrderedDict()

    def get(self, stream: str) -> CachedState[S] | None:
        """The cached entry, marked as recently used; ``None`` when absent."""
        entry = self._entries.get(stream)
        if entry is not None:
            self._entries.move_to_end(stream)
        return entry

    def put(self, stream: str, entry: CachedState[S]) -> None:
        """Store an entry unless a newer version is already cached; evict the least recently used.

        An entry without a version (a stream with no events) is not kept: there is nothing to fold on from.
        """
        if entry.version is None:
            return
        current = self._entries.get(stream)
        if current is not None and current.version is not None and current.version > entry.version:
            return
        self._entries[stream] = entry
        self._entries.move_to_end(stream)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, stream: str | None = None) -> None:
        """Forget one stream (or everything), e.g. after deleting it."""
        if stream is None:
            self._entries.clear()
        else:
            self._entries.pop(stream, None)

    def __len__(self) -> int:
        return len(self._entries)
