"""What async callers run before decoding a batch: the subjects and key ids it needs, preloaded.

An event with personal fields maps its subjects to their key ids in the ``$personal`` metadata key, so a
batch's keys load without decrypting (or even fully parsing) anything: events without the key cost one
substring test.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

import msgspec

from epoch.personal.fields import SUBJECTS_KEY
from epoch.personal.keystore import KeyStore
from epoch.records import RecordedEvent

__all__ = ["keys_of_codec", "preloading", "subjects_in"]

_MARK = b'"' + SUBJECTS_KEY.encode() + b'"'


class _Subjects(msgspec.Struct):
    subjects: dict[str, list[str]] = msgspec.field(default_factory=dict, name=SUBJECTS_KEY)


_SUBJECTS = msgspec.json.Decoder(_Subjects)


def keys_of_codec(codec: object) -> KeyStore | None:
    """The :class:`KeyStore` a codec decrypts with (``Codec(..., keys=keys)``), or ``None``."""
    keys = getattr(codec, "keys", None)
    return keys if isinstance(keys, KeyStore) else None


def subjects_of(record: RecordedEvent) -> dict[str, list[str]]:
    """The subjects in ``record``'s ``$personal`` metadata with their key ids (none when its metadata is
    not readable: the codec then reports the event itself)."""
    if _MARK not in record.metadata:
        return {}
    try:
        return _SUBJECTS.decode(record.metadata).subjects
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return {}


def subjects_in(records: Iterable[RecordedEvent]) -> dict[str, list[str]]:
    """Every subject the records' personal fields need, with the key ids, in order of appearance: what
    to pass to :meth:`KeyStore.preload` before decoding them."""
    found: dict[str, dict[str, None]] = {}
    for record in records:
        if _MARK in record.metadata:
            for subject, key_ids in subjects_of(record).items():
                found.setdefault(subject, {}).update(dict.fromkeys(key_ids))
    return {subject: list(key_ids) for subject, key_ids in found.items()}


async def preloading(keys: KeyStore, events: AsyncIterator[RecordedEvent]) -> AsyncGenerator[RecordedEvent, None]:
    """``events`` as they come, each one's subjects preloaded before it is yielded (a cached subject
    costs no query); closing this closes ``events``."""
    source: Any = events
    async with aclosing(source):
        async for record in events:
            if _MARK in record.metadata and not keys.ready(subjects := subjects_of(record)):
                await keys.preload(subjects)
            yield record
