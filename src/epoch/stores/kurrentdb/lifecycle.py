"""The KurrentDB store's stream lifecycle (DESIGN §8), on KurrentDB's own mechanisms:

- a hard delete is KurrentDB's tombstone (``tombstone_stream``): the server refuses every later append
  and read of the stream; the store reads it as empty and raises ``StreamDeleted`` (without the version
  the stream had: the server does not tell it);
- ``truncate_before`` sets the stream's ``$tb`` metadata, ``set_stream_limits`` its ``$maxCount`` and
  ``$maxAge`` (whole seconds, rounded up): stream reads honour them at once, on the server;
- ``limited_streams`` lists the streams whose metadata sets ``$maxCount`` or ``$maxAge`` (what
  ``epoch copy`` clears when the source lifted them: this store lists no lifecycle states): a filtered
  read of ``$all`` for the metadata streams (``$$<stream>``), a pass over the log's index, then each
  one's metadata;
- ``scavenge`` starts the server's scavenge (``POST /admin/scavenge`` on its HTTP port, the operations
  API). The server erases what ``$tb``, ``$maxCount``, ``$maxAge`` and tombstones exclude in the
  background, and ``$all`` keeps delivering those events until it is done. It reports no count: the
  method returns 0.

So erasure is not at once on KurrentDB (``erases_at_once = False``): a tombstoned or truncated stream
reads as such at once, but its events leave ``$all`` (and ``get_event``) only with the next scavenge.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import urllib.error
import urllib.request
from contextlib import aclosing
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from epoch.errors import StoreUnavailable, StreamDeleted, WrongExpectedVersion
from epoch.records import ANY, ExpectedVersion, ExpectedVersionLike
from epoch.stores._checks import check_expected_version, enforce_expected_version
from epoch.stores._lifecycle import check_hard, check_limits, check_truncate
from epoch.stores.kurrentdb.errors import driver_errors

if TYPE_CHECKING:
    from epoch.stores.kurrentdb import KurrentDBEventStore

__all__ = [
    "Lifecycle",
    "admin_url_of",
    "is_tombstoned",
    "limited_streams",
    "soft_delete",
    "scavenge",
    "set_limits",
    "take_admin_url",
    "tombstone",
    "truncate",
]

_ATTEMPTS = 5


def take_admin_url(uri: str) -> tuple[str, str | None]:
    """The connection string without epoch's ``admin_url`` parameter, and that parameter (or ``None``)."""
    parts = urlsplit(uri)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    named = next((value for key, value in pairs if key.lower() == "admin_url"), None)
    if named is None:
        return uri, None
    kept = [(key, value) for key, value in pairs if key.lower() != "admin_url"]
    return urlunsplit(parts._replace(query=urlencode(kept))), named


def admin_url_of(uri: str) -> str:
    """The server's HTTP address (the operations API) for a connection string: its first host, over
    HTTPS unless ``tls=false``."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2].split(",")[0]
    secure = "tls=false" not in parts.query.lower()
    return f"{'https' if secure else 'http'}://{host}"


async def is_tombstoned(store: KurrentDBEventStore, stream: str) -> bool:
    try:
        await store._last_event(stream, deleted_raises=True)
    except StreamDeleted:
        return True
    return False


async def soft_delete(store: KurrentDBEventStore, stream: str, expected: ExpectedVersion | int) -> None:
    """KurrentDB's ``delete_stream``: the guard is checked here, then the server deletes exactly the
    version that was checked, so a concurrent append makes it check again."""
    from kurrentdbclient.exceptions import NotFoundError, WrongCurrentVersionError

    client = store._open(stream)
    for _ in range(_ATTEMPTS):
        last = await store._last_event(stream)
        actual = None if last is None else last.version
        try:
            enforce_expected_version(stream, expected, actual)
        except WrongExpectedVersion:
            if actual is None and await is_tombstoned(store, stream):
                return  # deleted for good already: a second delete is a no-op
            raise
        if actual is None:
            return
        with driver_errors(stream):
            try:
                await client.delete_stream(stream, current_version=actual)
            except (WrongCurrentVersionError, NotFoundError):
                continue  # the stream moved since it was read: check the guard again
        return
    raise StoreUnavailable(f"KurrentDB: the stream kept changing during {_ATTEMPTS} delete attempts", stream)


async def tombstone(store: KurrentDBEventStore, stream: str, expected: ExpectedVersion | int) -> None:
    """The guard is checked here (as for a soft delete), then the server tombstones exactly the version
    that was checked, so a concurrent append makes it check again."""
    from kurrentdbclient import StreamState
    from kurrentdbclient.exceptions import NotFoundError, WrongCurrentVersionError

    client = store._open(stream)
    for _ in range(_ATTEMPTS):
        try:
            last = await store._last_event(stream, deleted_raises=True)
        except StreamDeleted:
            return  # deleted for good already: a second delete is a no-op
        actual = None if last is None else last.version
        enforce_expected_version(stream, expected, actual)
        try:
            with driver_errors(stream):
                try:
                    await client.tombstone_stream(stream, current_version=StreamState.ANY if actual is None else actual)
                except (WrongCurrentVersionError, NotFoundError):
                    continue  # the stream moved since it was read: check the guard again
        except StreamDeleted:
            return  # tombstoned concurrently
        return
    raise StoreUnavailable(f"KurrentDB: the stream kept changing during {_ATTEMPTS} delete attempts", stream)


async def _update_metadata(store: KurrentDBEventStore, stream: str, change: Any) -> None:
    """Read the stream's metadata, apply ``change`` to it and write it back, guarded by its version."""
    from kurrentdbclient.exceptions import WrongCurrentVersionError

    client = store._open(stream)
    for _ in range(_ATTEMPTS):
        with driver_errors(stream):
            metadata, version = await client.get_stream_metadata(stream)
            updated = change(dict(metadata))
            if updated == metadata:
                return
            try:
                await client.set_stream_metadata(stream, metadata=updated, current_version=version)
            except WrongCurrentVersionError:
                continue  # changed meanwhile: apply the change to the new metadata
        return
    raise StoreUnavailable(f"KurrentDB: the metadata kept changing during {_ATTEMPTS} attempts", stream)


async def truncate(store: KurrentDBEventStore, stream: str, version: int) -> None:
    if await is_tombstoned(store, stream):
        raise StreamDeleted(stream)
    last = await store._last_event(stream)
    if last is None:
        return  # never written, or nothing readable (deleted, or every event past the limits) to truncate
    boundary = min(version, last.version + 1)  # never past the end: $tb would hide later appends

    def change(metadata: dict[str, Any]) -> dict[str, Any]:
        if int(metadata.get("$tb", 0)) < boundary:
            metadata["$tb"] = boundary
        return metadata

    await _update_metadata(store, stream, change)


async def set_limits(store: KurrentDBEventStore, stream: str, max_count: int | None, max_age: timedelta | None) -> None:
    if await is_tombstoned(store, stream):
        raise StreamDeleted(stream)

    def change(metadata: dict[str, Any]) -> dict[str, Any]:
        metadata.pop("$maxCount", None)
        metadata.pop("$maxAge", None)
        if max_count is not None:
            metadata["$maxCount"] = max_count
        if max_age is not None:
            metadata["$maxAge"] = max(1, math.ceil(max_age.total_seconds()))  # KurrentDB counts whole seconds
        return metadata

    await _update_metadata(store, stream, change)


_METADATA_STREAM = "$$"
"""The prefix of a stream's metadata stream: every write of its metadata is a ``$metadata`` event there."""


async def limited_streams(store: KurrentDBEventStore) -> list[str]:
    """The user streams whose metadata sets ``$maxCount`` or ``$maxAge`` now, by name (not epoch's ``$``
    streams; one whose metadata the server answers as deleted, a tombstone's, has nothing to limit)."""
    read = store._open().read_all(filter_include=(_METADATA_STREAM,), filter_by_stream_name=True, filter_by_prefix=True)
    names: set[str] = set()
    async with aclosing(store._events(None, read)) as events:
        async for event in events:
            name: str = event.stream_name
            if name.startswith(_METADATA_STREAM) and not name.startswith(_METADATA_STREAM + "$"):
                names.add(name.removeprefix(_METADATA_STREAM))
    limited = []
    for stream in sorted(names):
        try:
            with driver_errors(stream):
                metadata, _ = await store._open(stream).get_stream_metadata(stream)
        except StreamDeleted:
            continue  # tombstoned (a server may answer its metadata so)
        if isinstance(metadata, dict) and ("$maxCount" in metadata or "$maxAge" in metadata):
            limited.append(stream)
    return limited


def _post_scavenge(url: str, credentials: tuple[str, str] | None, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/admin/scavenge", data=b"", method="POST")
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
        return answer


async def scavenge(store: KurrentDBEventStore) -> int:
    """Start the server's scavenge; 0 (the server reports no count). Raises ``StoreUnavailable`` when the
    operations API cannot be reached or refuses (it needs a user in ``$admins`` or ``$ops``)."""
    store._open()
    parts = urlsplit(store.uri)
    userinfo = parts.netloc.rpartition("@")[0]
    credentials = tuple(userinfo.split(":", 1)) if ":" in userinfo else None
    try:
        await asyncio.to_thread(_post_scavenge, store.admin_url, credentials, 30.0)  # type: ignore[arg-type]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StoreUnavailable(f"KurrentDB: cannot start a scavenge at {store.admin_url}: {exc}") from exc
    return 0


class Lifecycle:
    """The store's lifecycle methods (see the module docs)."""

    async def delete_stream(self, stream: str, expected_version: ExpectedVersionLike = ANY, hard: bool = False) -> None:
        """Soft-delete (KurrentDB's ``delete_stream``) or, with ``hard=True``, tombstone the stream; a
        tombstoned stream is left as it is."""
        store = cast("KurrentDBEventStore", self)
        store._check_name(stream)
        expected = check_expected_version(stream, expected_version)
        if check_hard(stream, hard):
            await tombstone(store, stream, expected)
        else:
            await soft_delete(store, stream, expected)

    async def truncate_before(self, stream: str, version: int) -> None:
        """``$tb`` metadata: reads start at ``version`` at once; the server erases at its next scavenge."""
        store = cast("KurrentDBEventStore", self)
        store._check_name(stream)
        stream, version = check_truncate(stream, version)
        await truncate(store, stream, version)

    async def set_stream_limits(
        self, stream: str, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        """``$maxCount`` and ``$maxAge`` metadata (whole seconds, rounded up), honoured by the server's reads."""
        store = cast("KurrentDBEventStore", self)
        store._check_name(stream)
        stream, max_count, max_age = check_limits(stream, max_count, max_age)
        await set_limits(store, stream, max_count, max_age)

    async def limited_streams(self) -> list[str]:
        """The streams whose metadata sets ``$maxCount`` or ``$maxAge``, by name: a filtered read of ``$all``
        (a pass over the log's index, so it is for ``epoch copy``), then each one's metadata."""
        return await limited_streams(cast("KurrentDBEventStore", self))

    async def scavenge(self, stream: str | None = None) -> int:
        """Start the server's scavenge (of every stream: KurrentDB scavenges the whole database); 0."""
        store = cast("KurrentDBEventStore", self)
        if stream is not None:
            store._check_name(stream)
        return await scavenge(store)
