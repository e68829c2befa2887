"""The key table of personal data on a KurrentDB server: companion streams (see :mod:`.companion`).

- ``$epoch-keys-<subject>``: one ``KeyCreated`` event per key of the subject (its id, the key in base64,
  when it was created). Forgetting soft-deletes the stream: its events read as gone at once and the
  server removes them from disk at its next scavenge (KurrentDB's documented soft delete), so until then
  the key bytes are still in the database files (docs/personal-data.md, "Differences on KurrentDB").
- ``$epoch-key-subjects``: one ``SubjectKeyed`` event per key written, naming its subject (streams cannot
  be listed by prefix, and ``epoch copy`` needs every key).
- ``$epoch-key-changes``: one ``KeysForgotten`` event per forget; its length is the change counter other
  processes poll.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

import msgspec

from epoch.errors import DecodeError
from epoch.records import NewEvent, RecordedEvent
from epoch.stores._keys import SubjectKey, SupportsKeys
from epoch.stores.kurrentdb.companion import KurrentDBCompanionStreams

__all__ = ["KurrentDBKeys"]

_SUBJECTS = "key-subjects"
_CHANGES = "key-changes"


class _KeyCreated(msgspec.Struct, frozen=True):
    key_id: str
    key: str
    created: int


class _Subject(msgspec.Struct, frozen=True):
    subject: str


def _decode(record: RecordedEvent, schema: type[msgspec.Struct]) -> msgspec.Struct:
    try:
        return msgspec.json.decode(record.data, type=schema)
    except msgspec.DecodeError as exc:
        raise DecodeError(record.stream, record.version, record.type, str(exc)) from exc


class KurrentDBKeys(SupportsKeys):
    """:class:`SupportsKeys` in companion streams, for the KurrentDB store."""

    __slots__ = ()

    def companion_streams(self) -> KurrentDBCompanionStreams:
        raise NotImplementedError  # pragma: no cover - the store's own method comes first in the MRO

    async def read_keys(self, subjects: Sequence[str]) -> list[SubjectKey]:
        streams = self.companion_streams()
        found: list[SubjectKey] = []
        for subject in dict.fromkeys(subjects):
            async with aclosing(streams.read(f"keys-{subject}")) as records:
                async for record in records:
                    created = _decode(record, _KeyCreated)
                    assert isinstance(created, _KeyCreated)
                    key = base64.b64decode(created.key)
                    found.append(SubjectKey(subject, created.key_id, key, created.created))
        return sorted(found, key=lambda key: (key.subject, key.created, key.key_id))

    async def write_keys(self, keys: Sequence[SubjectKey]) -> None:
        streams = self.companion_streams()
        known = {(key.subject, key.key_id) for key in await self.read_keys([key.subject for key in keys])}
        for key in keys:
            if (key.subject, key.key_id) in known:
                continue
            body = _KeyCreated(key.key_id, base64.b64encode(key.key).decode("ascii"), key.created)
            await streams.append(f"keys-{key.subject}", [NewEvent("KeyCreated", msgspec.json.encode(body))])
            await streams.append(_SUBJECTS, [NewEvent("SubjectKeyed", msgspec.json.encode(_Subject(key.subject)))])
            known.add((key.subject, key.key_id))

    async def forget_keys(self, subject: str) -> int:
        streams = self.companion_streams()
        erased = len(await self.read_keys([subject]))
        await streams.delete(f"keys-{subject}")
        await streams.append(_CHANGES, [NewEvent("KeysForgotten", msgspec.json.encode(_Subject(subject)))])
        return erased

    async def key_changes(self) -> int:
        async with aclosing(self.companion_streams().read(_CHANGES, backwards=True, limit=1)) as records:
            async for record in records:
                return record.version + 1
        return 0

    async def export_keys(self) -> AsyncIterator[SubjectKey]:
        subjects: dict[str, None] = {}
        async with aclosing(self.companion_streams().read(_SUBJECTS)) as records:
            async for record in records:
                named = _decode(record, _Subject)
                assert isinstance(named, _Subject)
                subjects[named.subject] = None
        for key in await self.read_keys(list(subjects)):
            yield key
