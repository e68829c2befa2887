"""epoch's own streams on a KurrentDB server: where projections keep checkpoints and parked events.

KurrentDB has no tables, so what the SQL stores keep in ``epoch_checkpoints``/``epoch_parked`` lives in
*companion streams* named ``$epoch-<name>``. The ``$`` prefix is KurrentDB's namespace for system
streams, and that is the point:

- epoch refuses ``$`` names for users' streams on this store, so no user stream can collide with them;
- ``read_all``/``subscribe`` exclude ``$`` streams on the server (also with ``categories``: the exact
  category check drops them), and ``head_position``, ``get_event``, ``epoch streams``, ``epoch copy``
  and the explorer read through those, so they never show these events.

The price: on a secured server, ``$`` streams are readable and writable by ``$admins`` only unless the
server's ``$systemStreamAcl`` grants more. A refusal is a :class:`~epoch.errors.ConfigurationError`
naming the stream (see :mod:`epoch.stores.kurrentdb.errors`), never a lost connection that a runner would retry forever.

Writes go straight to the server (no id check, no read-back): checkpoints are rewritten on every batch
and need neither.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

import msgspec

from epoch.errors import InvalidStreamName
from epoch.records import NewEvent, RecordedEvent
from epoch.stores.kurrentdb.errors import driver_errors
from epoch.stores.kurrentdb.mapping import to_new_event, to_record

try:
    from kurrentdbclient import StreamState
    from kurrentdbclient.exceptions import NotFoundError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("kurrentdbclient", "kurrentdb") from exc

if TYPE_CHECKING:
    from epoch.stores.kurrentdb import KurrentDBEventStore

__all__ = ["COMPANION_PREFIX", "KurrentDBCompanionStreams"]

COMPANION_PREFIX = "$epoch-"
"""Every companion stream's name starts with this (a KurrentDB system-stream name)."""


class KurrentDBCompanionStreams:
    """Append to, read, limit and delete ``$epoch-<name>`` streams of one store's server.

    ``name`` is the part after the prefix (e.g. ``checkpoint-user-directory``); records come back with
    that name as their ``stream``, so callers never see the prefix.
    """

    def __init__(self, store: KurrentDBEventStore) -> None:
        self._store = store

    @staticmethod
    def stream_name(name: str) -> str:
        """The server's name for companion stream ``name`` (e.g. from a projection's name).

        Raises :class:`~epoch.errors.InvalidStreamName` for a name the server cannot be sent (gRPC sends
        names as UTF-8, so a lone surrogate cannot travel); everything else is the server's to accept.
        """
        stream = COMPANION_PREFIX + name
        try:
            stream.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidStreamName(stream, "contains a lone surrogate") from None
        return stream

    async def append(self, name: str, events: Sequence[NewEvent]) -> None:
        """Append ``events`` to the stream in one atomic write (no expected-version guard)."""
        stream = self.stream_name(name)
        client = self._store._open(stream)
        with driver_errors(stream):
            await client.append_to_stream(
                stream, events=[to_new_event(e) for e in events], current_version=StreamState.ANY
            )

    async def read(
        self, name: str, backwards: bool = False, limit: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        """The stream's visible events (after a soft delete and ``$maxCount``), oldest first unless ``backwards``."""
        stream = self.stream_name(name)
        client = self._store._open(stream)
        read = client.read_stream(stream, backwards=backwards, limit=sys.maxsize if limit is None else limit)
        with driver_errors(stream):
            async with aclosing(self._store._events(stream, read)) as events:
                async for event in events:
                    yield msgspec.structs.replace(to_record(event), stream=name)

    async def set_max_count(self, name: str, max_count: int) -> None:
        """Keep only the newest ``max_count`` events (KurrentDB's ``$maxCount``: older ones read as gone at
        once and are removed by the next scavenge)."""
        stream = self.stream_name(name)
        client = self._store._open(stream)
        with driver_errors(stream):
            await client.set_stream_metadata(stream, metadata={"$maxCount": max_count})

    async def delete(self, name: str) -> None:
        """Soft-delete the stream (reads see nothing until the next append); a missing stream is fine."""
        stream = self.stream_name(name)
        client = self._store._open(stream)
        with driver_errors(stream):
            try:
                await client.delete_stream(stream, current_version=StreamState.ANY)
            except NotFoundError:
                return
