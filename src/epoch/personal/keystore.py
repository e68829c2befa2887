"""``KeyStore``: the per-subject keys of personal data, kept in the store's database, cached in process.

Decoding is synchronous and never waits for the database, so keys are loaded ahead of it: async callers
(``CommandHandler``, the runners, the explorer) ``await keys.preload(subjects)`` for a batch, and the
codec then asks the cache (:meth:`KeyStore.decryption_key`), which raises :class:`KeyNotLoaded` for a
subject it does not hold.

Which keys a batch needs: an event's ``$personal`` metadata maps each subject to the ids of the keys
its fields are sealed under, and ``preload`` given that mapping (:func:`~epoch.personal.subjects_in`)
reads a cached subject again when it lacks one of them (a rotation, or a first key, made by another
process). A key id the table does not hold, once read, is *erased* (forgotten); one never asked for is
not loaded (``KeyNotLoaded``), never taken for erased: a key made elsewhere never reads as redacted.

Other processes' forgets: every ``preload`` more than :data:`REVALIDATE_AFTER` seconds after the last
check reads the store's change counter (one small query) and drops the whole cache when it moved. A
cache not checked for :data:`STALE_AFTER` seconds answers :class:`KeyNotLoaded` (except on the memory
store, whose table is this process's own: ``shared``), so a forget anywhere is honoured within a second by every
process that decodes: it either revalidated since, or it must preload again.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from epoch.errors import ConfigurationError, InvalidEvent, KeyNotLoaded
from epoch.personal.cipher import drop_ciphers, new_key, new_key_id
from epoch.stores import SubjectKey, SupportsKeys, keys_of
from epoch.stores.memory import MemoryEventStore
from epoch.streams import check_name

__all__ = ["REVALIDATE_AFTER", "STALE_AFTER", "KeyStore", "check_subject"]

REVALIDATE_AFTER = 0.5
"""Seconds after which ``preload`` reads the store's change counter again."""
STALE_AFTER = 1.0
"""Seconds after which an unchecked cache answers :class:`KeyNotLoaded` (DESIGN §8: one second)."""
PRELOAD_TRIES = 3
"""Revalidations one ``preload`` runs, at most, until its check is under :data:`REVALIDATE_AFTER` old."""

SUBJECT_LIMIT = 256

_clock = time.monotonic  # one name to replace in tests (the event loop keeps time.monotonic)

_BY_STORE: weakref.WeakKeyDictionary[object, KeyStore] = weakref.WeakKeyDictionary()


def check_subject(subject: object) -> str:
    """``subject`` when it is a valid subject id (the rules of an event type name: 1-256 code points, no
    control characters or surrogates, no leading or trailing whitespace); else :class:`InvalidEvent`."""
    problem = check_name(subject, SUBJECT_LIMIT)
    if problem is not None:
        raise InvalidEvent("", 0, f"subject {subject!r} {problem}")
    assert isinstance(subject, str)
    return subject


class KeyStore:
    """One AES-256-GCM key per subject (several after a rotation), in the store's own database.

    Get one with :meth:`for_store` (one per store object, so a codec, a CLI and the explorer share a
    cache). Keys are created on demand when a :class:`~epoch.CommandHandler` writes a subject's first
    event (or by :meth:`ensure`), :meth:`rotate` adds a newer key for new events, and :meth:`forget`
    erases them all: every field sealed under them then decodes to its redacted value, here at once and in
    other processes within a second.
    """

    def __init__(self, table: SupportsKeys, *, shared: bool = False) -> None:
        self._table = table
        # The table is this process's own (memory): a cache never goes stale (it still revalidates, for
        # another KeyStore on the same table, at no I/O cost).
        self._shared = shared
        self._cache: dict[str, dict[str, SubjectKey]] = {}
        self._erased: dict[str, set[str]] = {}  # key ids a read of the table did not find: forgotten
        self._missed: dict[str, set[str]] = {}  # key ids a decode asked for and the cache lacked
        self._pending: dict[str, SubjectKey] = {}
        self._changes: int | None = None
        self._checked = float("-inf")
        self._creating = False
        self.generation = 0
        """Grows whenever a forget is seen (here, or another process's on revalidation): a cache of
        states decided on personal data (``CommandHandler``'s) is dropped when it moves."""

    @classmethod
    def for_store(cls, store: object) -> KeyStore:
        """The key store kept in ``store``'s database (memory, SQLite, PostgreSQL; KurrentDB: companion
        streams); the same object for the same store. Raises :class:`ConfigurationError` for a store that
        keeps no keys."""
        table = keys_of(store)
        if table is None:
            raise ConfigurationError(f"{type(store).__name__} keeps no keys: personal data needs SupportsKeys")
        found = _BY_STORE.get(store)
        if found is None:
            found = _BY_STORE[store] = cls(table, shared=isinstance(store, MemoryEventStore))
        return found

    # -- the async side: loading, creating, forgetting ------------------------------------------

    async def preload(self, subjects: Iterable[str] | Mapping[str, Iterable[str]]) -> None:
        """Load the keys of ``subjects`` into the cache (one query for those it lacks) and revalidate the
        cache against other processes' forgets when it was last checked over half a second ago.

        Given a mapping of subjects to key ids (what :func:`~epoch.personal.subjects_in` returns for a
        batch), a cached subject is read again when one of those keys is neither cached nor known to
        be erased; so is a subject whose decode missed a key since (see :meth:`decryption_key`).

        A check counts from when its query started, so a store slow to answer (a loaded machine) could
        leave the cache stale by the time this returns, and the decode right after it would raise
        :class:`KeyNotLoaded`: it then revalidates again, up to :data:`PRELOAD_TRIES` times in all. A
        read a forget overtook (this process's, or another's seen on revalidation meanwhile) is not
        cached: its subjects are read again, so an erased key is never cached again.
        """
        needed = _needed(subjects)
        for _ in range(PRELOAD_TRIES):
            await self._load(needed)
            if self._shared or _clock() - self._checked < REVALIDATE_AFTER:
                return

    async def _load(self, needed: dict[str, set[str]]) -> None:
        await self._revalidate()
        earlier: dict[str, set[str]] = {}  # key ids a read found that a forget (seen since) may have erased
        while True:
            stale = [s for s, ids in needed.items() if s not in self._cache or s in earlier or self._unknown(s, ids)]
            for subject in [s for s in stale if check_name(s, SUBJECT_LIMIT) is not None]:
                # Stored metadata is anyone's: a subject no event could have has no key (it reads as erased).
                self._cache[subject] = {}
                self._erased.setdefault(subject, set()).update(needed[subject])
                stale.remove(subject)
            if not stale:
                return
            generation = self.generation
            rows = await self._table.read_keys(stale)
            if self.generation == generation:
                break
            # A forget was seen while the rows were on their way (here, or another process's on a
            # revalidation): they may hold its keys, which must never be cached again. Read those
            # subjects again; a key the next read lacks is erased.
            for subject in stale:
                earlier.setdefault(subject, set())
            for key in rows:
                earlier[key.subject].add(key.key_id)
        found: dict[str, dict[str, SubjectKey]] = {s: {} for s in stale}
        for key in rows:
            found[key.subject][key.key_id] = key
        for subject, keys in found.items():
            keys.update({k.key_id: k for k in self._pending.values() if k.subject == subject})
            self._cache[subject] = keys
            asked = needed[subject] | self._missed.pop(subject, set()) | earlier.get(subject, set())
            self._erased.setdefault(subject, set()).update(asked - keys.keys())

    def _unknown(self, subject: str, key_ids: set[str]) -> bool:
        """Whether the cache cannot answer for one of ``key_ids`` of a cached ``subject``."""
        if subject in self._missed:
            return True
        keys, erased = self._cache[subject], self._erased.get(subject, ())
        return any(key_id not in keys and key_id not in erased for key_id in key_ids)

    def ready(self, subjects: Iterable[str] | Mapping[str, Iterable[str]]) -> bool:
        """Whether :meth:`preload` of ``subjects`` would neither query nor revalidate (a sync check, so a
        stream of one subject's events awaits nothing per event)."""
        fresh = _clock() - self._checked < REVALIDATE_AFTER
        needed = _needed(subjects)
        return fresh and all(s in self._cache and not self._unknown(s, ids) for s, ids in needed.items())

    async def ensure(self, subjects: Iterable[str]) -> None:
        """:meth:`preload`, then give each subject without a key one (stored before this returns)."""
        wanted = [check_subject(s) for s in subjects]
        await self.preload(wanted)
        with self.creating():
            for subject in wanted:
                self.encryption_key(subject)
        await self.save()

    async def save(self) -> None:
        """Store the keys created while encoding (see :meth:`creating`); the handler calls it before
        every append, so no event is ever written under a key the database does not hold."""
        if self._pending:
            pending = list(self._pending.values())
            await self._table.write_keys(pending)
            for key in pending:
                self._pending.pop(key.subject, None)

    async def rotate(self, subject: str) -> str:
        """Give ``subject`` a new key for the events encoded from now on; older ones stay readable with
        their own keys until :meth:`forget`. Returns the new key's id."""
        check_subject(subject)
        key = SubjectKey(subject, new_key_id(), new_key(), time.time_ns())
        await self._table.write_keys([key])
        self._cache.setdefault(subject, {})[key.key_id] = key
        return key.key_id

    async def forget(self, subject: str) -> int:
        """Erase every key of ``subject`` (crypto-shredding): its personal fields decode to their
        redacted value from now on. Returns the number of keys erased (0: none was stored)."""
        check_subject(subject)
        self._pending.pop(subject, None)
        erased = await self._table.forget_keys(subject)
        self._erased.setdefault(subject, set()).update(self._cache.get(subject, {}))
        self._cache[subject] = {}
        self.generation += 1
        drop_ciphers()
        return erased

    async def refresh(self) -> None:
        """Revalidate the cache against other processes' forgets, when last checked over half a second ago."""
        await self._revalidate()

    async def _revalidate(self) -> None:
        started = _clock()
        if started - self._checked < REVALIDATE_AFTER:
            return
        changes = await self._table.key_changes()
        if changes != self._changes:
            if self._changes is not None:  # someone forgot a subject: what is cached may be gone
                self._cache = {s: {k.key_id: k} for s, k in self._pending.items()}
                self._erased, self._missed = {}, {}
                self.generation += 1
                drop_ciphers()
            self._changes = changes
        self._checked = started

    # -- the sync side: what the codec asks -----------------------------------------------------

    @contextmanager
    def creating(self) -> Iterator[None]:
        """While open, :meth:`encryption_key` creates a key for a subject without one (kept pending until
        :meth:`save`) instead of raising :class:`KeyNotLoaded`."""
        before, self._creating = self._creating, True
        try:
            yield
        finally:
            self._creating = before

    def encryption_key(self, subject: str) -> SubjectKey:
        """The newest key of ``subject``; raises :class:`KeyNotLoaded` when the subject is not cached or
        has no key (inside :meth:`creating`, a new pending key instead)."""
        keys, erased = self._cache.get(subject), self._erased.get(subject, ())
        usable = [key for key in keys.values() if key.key_id not in erased] if keys else []
        if usable:  # never a key this process knows is erased
            return max(usable, key=lambda key: (key.created, key.key_id))
        if not self._creating:
            raise KeyNotLoaded(subject)
        key = self._pending[subject] = SubjectKey(subject, new_key_id(), new_key(), time.time_ns())
        self._cache.setdefault(subject, {})[key.key_id] = key
        return key

    def decryption_key(self, subject: str, key_id: str) -> bytes | None:
        """The key ``key_id`` of ``subject``, or ``None`` when it is erased (a read of the table did not
        find it: forgotten, or never stored here). Raises :class:`KeyNotLoaded` when the subject is not
        cached, the cache is over a second old, or the key is not cached and was never asked for (made
        by another process since: the next :meth:`preload` of the subject reads it)."""
        keys = self._cache.get(subject)
        if keys is None or (not self._shared and _clock() - self._checked > STALE_AFTER):
            raise KeyNotLoaded(subject)
        key = keys.get(key_id)
        if key is not None:
            return key.key
        if key_id in self._erased.get(subject, ()):
            return None
        self._missed.setdefault(subject, set()).add(key_id)
        raise KeyNotLoaded(subject)


def _needed(subjects: Iterable[str] | Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Subjects with the key ids asked for (none: the subject's keys, whichever they are)."""
    if isinstance(subjects, Mapping):
        return {subject: set(ids) for subject, ids in subjects.items()}
    return {subject: set() for subject in subjects}
