"""How tools that show stored bytes (the explorer) show personal fields: never the ciphertext, never the
plaintext, only whether the value is still readable."""

from __future__ import annotations

from typing import Any

import msgspec

from epoch.personal.batches import subjects_of
from epoch.personal.cipher import CipherFailed, parse
from epoch.personal.keystore import KeyStore
from epoch.records import RecordedEvent

__all__ = ["ERASED", "SEALED", "shown_record"]

SEALED = "[personal data: encrypted]"
"""What a sealed value whose key exists shows as."""
ERASED = "[personal data: erased]"
"""What a sealed value whose key is erased (the subject was forgotten) shows as: redacted for good."""

_ENCODER = msgspec.json.Encoder()


async def shown_record(keys: KeyStore, record: RecordedEvent) -> RecordedEvent:
    """``record`` with each sealed value of its data replaced by :data:`SEALED` or :data:`ERASED`
    (unchanged when it has no personal fields, or its data is not JSON)."""
    subjects = subjects_of(record)
    if not subjects:
        return record
    try:
        payload = msgspec.json.decode(record.data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return record
    await keys.preload(subjects)
    owner = {key_id: subject for subject, key_ids in subjects.items() for key_id in key_ids}

    def live(key_id: str) -> bool:
        subject = owner.get(key_id)
        return subject is not None and keys.decryption_key(subject, key_id) is not None

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        try:
            sealed = parse(value)
        except CipherFailed:
            return ERASED
        if sealed is None:
            return value
        return SEALED if live(sealed[0]) else ERASED

    return msgspec.structs.replace(record, data=_ENCODER.encode(walk(payload)))
