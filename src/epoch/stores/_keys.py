"""The key table capability: where a store keeps the per-subject keys of personal data (crypto-shredding).

:class:`SupportsKeys` is declared by every store of epoch (memory, SQLite, PostgreSQL, KurrentDB); it moves
raw key material only (:class:`SubjectKey`), knows nothing of ciphers or event classes, and is asked
about only in :func:`keys_of`. ``epoch.personal.KeyStore`` puts the cipher and the in-process cache on
top; ``epoch copy`` carries the rows from one store to another with :meth:`SupportsKeys.export_keys` and
:meth:`SupportsKeys.write_keys`.

A subject may hold several keys (a rotation adds one; two processes creating a subject's first key at
once each add theirs): each has a random ``key_id``, so no two writers ever collide, and the newest
(largest ``created``) encrypts new events. Forgetting a subject deletes every key it holds and bumps
:meth:`SupportsKeys.key_changes`, the cheap counter other processes poll to drop their cached keys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

__all__ = ["MemoryKeys", "SubjectKey", "SupportsKeys", "keys_of"]


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """One key of one subject, as a store keeps it."""

    subject: str
    key_id: str
    """Random, 16 hex digits: names the key inside a ciphertext."""
    key: bytes
    """The raw 256-bit AES key."""
    created: int
    """Nanoseconds since the epoch: the newest key encrypts."""


class SupportsKeys(ABC):
    """Declared by a store that keeps personal-data keys in its own database (see the module docs)."""

    __slots__ = ()

    @abstractmethod
    async def read_keys(self, subjects: Sequence[str]) -> list[SubjectKey]:
        """Every key of these subjects, oldest first (a forgotten or unknown subject has none)."""

    @abstractmethod
    async def write_keys(self, keys: Sequence[SubjectKey]) -> None:
        """Store ``keys`` in one transaction; a ``(subject, key_id)`` already stored is left as it is."""

    @abstractmethod
    async def forget_keys(self, subject: str) -> int:
        """Erase every key of ``subject`` and bump :meth:`key_changes`; the number of keys erased."""

    @abstractmethod
    async def key_changes(self) -> int:
        """A counter that grows with every forget (one cheap read: how caches notice other processes)."""

    @abstractmethod
    def export_keys(self) -> AsyncIterator[SubjectKey]:
        """Every key the store holds (for ``epoch copy``)."""


def keys_of(store: object) -> SupportsKeys | None:
    """``store`` as a :class:`SupportsKeys`, or ``None`` when it keeps no keys."""
    return store if isinstance(store, SupportsKeys) else None


class MemoryKeys(SupportsKeys):
    """The key table in process, for the memory store (it lives and dies with the store)."""

    _keys: dict[str, dict[str, SubjectKey]]
    _key_changes: int

    def _key_table(self) -> dict[str, dict[str, SubjectKey]]:
        # Created on first use: the memory store's hot paths never see this table.
        try:
            return self._keys
        except AttributeError:
            self._keys, self._key_changes = {}, 0
            return self._keys

    async def read_keys(self, subjects: Sequence[str]) -> list[SubjectKey]:
        table = self._key_table()
        found = [key for subject in dict.fromkeys(subjects) for key in table.get(subject, {}).values()]
        return sorted(found, key=lambda key: (key.subject, key.created, key.key_id))

    async def write_keys(self, keys: Sequence[SubjectKey]) -> None:
        table = self._key_table()
        for key in keys:
            table.setdefault(key.subject, {}).setdefault(key.key_id, key)

    async def forget_keys(self, subject: str) -> int:
        erased = len(self._key_table().pop(subject, {}))
        self._key_changes += 1
        return erased

    async def key_changes(self) -> int:
        self._key_table()
        return self._key_changes

    async def export_keys(self) -> AsyncIterator[SubjectKey]:
        for keys in list(self._key_table().values()):
            for key in sorted(keys.values(), key=lambda key: (key.created, key.key_id)):
                yield key
