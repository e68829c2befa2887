"""Stored bytes that the CLI and the explorer must show without failing, pinned one by one, and a way to
plant metadata that no current version of epoch would write (as an older version or another tool might)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from uuid import UUID

from epoch import NewEvent, open_store

# Bytes that are not shown as JSON (epoch._payload): each becomes {"$bytes": "<base64>"}.
SHOWN_AS_BYTES: dict[str, bytes] = {
    "deep list": b"[" * 10_000 + b"1" + b"]" * 10_000,
    "deep object": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "one level too deep": b"[" * 101 + b"]" * 101,
    "invalid UTF-8 in a string": b'{"a": "\xff\xfe"}',
    "an encoded surrogate": b'{"a": "\xed\xa0\x80"}',
    "an escaped lone surrogate": b'{"a": "\\ud800"}',
    "an escaped low surrogate": b'{"a": "\\udc00x"}',
    "NaN": b'{"a": NaN}',
    "Infinity": b'{"a": -Infinity}',
    "1e999": b'{"a": 1e999}',
    "a raw NUL in a string": b'{"a": "\x00"}',
    "NUL": b"\x00",
    "not JSON": b"\xff\x00not json",
    "trailing junk": b'{"a": 1} trailing',
    "a trailing comma": b'{"a": 1,}',
    "a byte order mark": b"\xef\xbb\xbf{}",
    "an int of 5000 digits": b"1" * 5000,
    "the JSON null": b"null",
    "the $bytes form itself": b'{"$bytes": "AAAA"}',
    "terminal escapes": b"\x1b[31mred\x1b[0m\r\nnext",
}

# Well-formed JSON within the nesting limit: shown as JSON, each token verbatim. Value: the compact text.
SHOWN_AS_JSON: dict[bytes, bytes] = {
    b"[" * 100 + b"]" * 100: b"[" * 100 + b"]" * 100,
    b'{"a": 1267650600228229401496703205376}': b'{"a":1267650600228229401496703205376}',
    b'{"a": 1.10000000000000000001, "a": 2}': b'{"a":1.10000000000000000001,"a":2}',
    b'{"a": "\\u0000 \\ud83d\\ude00"}': b'{"a":"\\u0000 \\ud83d\\ude00"}',
    b' "text" ': b'"text"',
    b"1": b"1",
    b"[]": b"[]",
    b'{"$bytes": "AAAA", "b": 1}': b'{"$bytes":"AAAA","b":1}',
}

# Metadata a store hands back that append would refuse today: not UTF-8, too deep, not JSON.
OLD_METADATA: dict[str, bytes] = {
    "invalid UTF-8": b'{"$correlation_id": "\xff"}',
    "too deep": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "NUL": b"\x00",
}


async def plant_old_metadata(path: Path, stream: str) -> dict[str, bytes]:
    """Append one event per :data:`OLD_METADATA` entry to ``stream`` of the SQLite file at ``path``, then
    overwrite their metadata in the file itself. Returns event id (as text) -> the planted metadata."""
    planted = {}
    async with open_store(f"sqlite:///{path}") as store:
        for name, metadata in OLD_METADATA.items():
            event = NewEvent("Old", b'{"name": "%s"}' % name.encode(), b'{"placeholder": true}')
            await store.append(stream, [event])
            planted[str(event.id)] = metadata
    with sqlite3.connect(path) as db:
        for event_id, metadata in planted.items():
            db.execute("UPDATE events SET metadata = ? WHERE id = ?", (metadata, UUID(event_id).bytes))
    db.close()
    return planted
