"""The KurrentDB (formerly EventStoreDB) store, on the official ``kurrentdbclient`` asyncio gRPC client.

KurrentDB already is an event store, so this package is a mapping (docs/stores/kurrentdb.md has it all).
The store is here; :mod:`~epoch.stores.kurrentdb.mapping` translates records, guards, filters and URLs,
:mod:`~epoch.stores.kurrentdb.errors` the client's errors (one table), and
:mod:`~epoch.stores.kurrentdb.companion` keeps epoch's own ``$epoch-...`` streams.

- A stream is a KurrentDB stream of the same name, a version its revision, an event id KurrentDB's;
  ``data``/``metadata`` travel unchanged; ``recorded_at`` is the server's ``created`` time in UTC.
- ``position = commit_position + 1`` (commit positions may be 0; epoch's ``after=0`` is "from the
  beginning"); ``after`` must be 0 or a position this store returned.
- Expected versions are checked by the server; ``WrongCurrentVersionError`` becomes
  :class:`~epoch.errors.WrongExpectedVersion` with the server's actual version (in ``errors``).
- Idempotency is KurrentDB's own, per stream: an id stored in *another stream* is not detected
  (``detects_duplicate_ids_across_streams = False``); within a stream the newest ``id_check_window``
  events are checked. :meth:`get_event` scans the hinted stream, else ``$all`` newest first.
- Checkpoints, parked events and snapshots (``snapshots``) live in ``$epoch-...`` companion streams
  (:meth:`companion_streams`); system streams (``$...``) are skipped by reads and refused for writes.
  ``delete_stream`` is a soft delete, or a tombstone; truncation, limits and scavenge are KurrentDB's own
  (``lifecycle``).

Each append costs one append call plus one or two reads (KurrentDB reports only the last event's commit
position; epoch's result carries every event's position and the server's timestamp).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing, suppress
from typing import Any
from uuid import UUID

from epoch.errors import (
    ConfigurationError,
    DuplicateEventId,
    InvalidStreamName,
    StoreUnavailable,
    WrongExpectedVersion,
)
from epoch.records import ANY, AppendResult, ExpectedVersionLike, NewEvent, RecordedEvent
from epoch.stores._base import StoreLifecycle
from epoch.stores._checks import (
    DEFAULT_MAX_EVENT_SIZE,
    GLOBAL_LOG,
    check_events,
    check_expected_version,
    check_max_event_size,
    check_read,
    check_stream_name,
    enforce_expected_version,
    is_replay,
)
from epoch.stores.kurrentdb import lifecycle
from epoch.stores.kurrentdb.companion import KurrentDBCompanionStreams
from epoch.stores.kurrentdb.dcb import MAX_SERVER_INT, AtomicWritesUnsupported
from epoch.stores.kurrentdb.errors import driver_errors
from epoch.stores.kurrentdb.keys import KurrentDBKeys
from epoch.stores.kurrentdb.mapping import (
    exact_stream,
    is_user_event,
    split_url,
    stream_filter,
    to_new_event,
    to_record,
    to_stream_state,
)
from epoch.stores.kurrentdb.snapshots import KurrentDBSnapshots

try:
    from kurrentdbclient import AsyncKurrentDBClient
    from kurrentdbclient.exceptions import (
        NotFoundError,
        ProgrammingError,
        StreamIsDeletedError,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from epoch.errors import MissingDependency

    raise MissingDependency("kurrentdbclient", "kurrentdb") from exc

__all__ = ["DEFAULT_ID_CHECK_WINDOW", "DEFAULT_KURRENTDB_MAX_EVENT_SIZE", "KurrentDBEventStore"]

DEFAULT_KURRENTDB_MAX_EVENT_SIZE = DEFAULT_MAX_EVENT_SIZE - 1024
"""1 MiB less room for the type name: a default KurrentDB refuses appends over 1 MiB (``MaxAppendSize``)."""

DEFAULT_ID_CHECK_WINDOW = 1000
"""How many of a stream's newest events an append checks for the batch's ids (``None``: all of them)."""

"""The largest revision, count or commit position KurrentDB handles (its server side is signed 64-bit;
the protocol's fields are unsigned 64-bit). epoch's ints are unbounded: larger values are mapped here
to what they mean (nothing to read, a guard that cannot match) instead of reaching the protocol."""


class KurrentDBEventStore(
    AtomicWritesUnsupported, StoreLifecycle, lifecycle.Lifecycle, KurrentDBSnapshots, KurrentDBKeys
):
    """An :class:`~epoch.stores.EventStore` on a KurrentDB server or cluster.

    ``KurrentDBEventStore("kurrentdb://localhost:2113?tls=false")`` takes the client's connection string
    (``kurrentdb://``, ``kurrentdb+discover://``, ``esdb://``, ``esdb+discover://``) unchanged.
    """

    boundary_operations = frozenset({"read_query"})
    """``read_query`` only, by a scan of ``$all``; the atomic writes raise ``NotSupported`` (see ``dcb``)."""

    erases_at_once = False
    """Tombstoned and truncated events stay in ``$all`` until the server's next scavenge (``lifecycle``)."""
    scavenge_counts = False
    """``scavenge`` starts the server's, which reports no count: it returns 0."""
    tombstones_keep_version = False
    """``StreamDeleted`` from a tombstone names no version: the server does not tell it."""

    detects_duplicate_ids_across_streams = False
    """Guarantee 5 holds within a stream only (for its newest ``id_check_window`` events): KurrentDB keeps
    no index of event ids, so an id already stored in another stream is stored again there (see
    docs/stores/kurrentdb.md and ``epoch.testing.contract_ids``)."""

    def __init__(
        self,
        uri: str,
        *,
        max_event_size: int = DEFAULT_KURRENTDB_MAX_EVENT_SIZE,
        id_check_window: int | None = DEFAULT_ID_CHECK_WINDOW,
        root_certificates: str | bytes | None = None,
        admin_url: str | None = None,
    ) -> None:
        uri, named = lifecycle.take_admin_url(uri)  # also given to the constructor in the URI, never to the client
        self.uri = uri
        self.admin_url = (admin_url or named or lifecycle.admin_url_of(uri)).rstrip("/")
        """The server's HTTP address, where ``scavenge`` starts the server's scavenge."""
        self.max_event_size = check_max_event_size(max_event_size)
        self.id_check_window = id_check_window
        try:
            self._client: Any = AsyncKurrentDBClient(uri, root_certificates=root_certificates)
        except ValueError as exc:
            raise ConfigurationError(f"bad KurrentDB connection string {uri!r}: {exc}") from exc
        self._closed = False
        self._closing = asyncio.Event()  # set by close(): wakes subscriptions that wait for nothing

    @classmethod
    async def from_url(cls, url: str) -> KurrentDBEventStore:
        """``kurrentdb://host:2113?tls=false`` or ``esdb://...``.

        epoch's own options (taken out before the client sees the URL): ``max_event_size`` and
        ``id_check_window`` (``none`` for the whole stream).
        """
        uri, options = split_url(url)
        return cls(uri, **options)

    # -- helpers --------------------------------------------------------------------------------

    def _open(self, stream: str | None = None) -> Any:
        if self._closed:
            raise StoreUnavailable("the KurrentDB store is closed", stream)
        return self._client

    @staticmethod
    def _check_name(stream: object) -> str:
        name = check_stream_name(stream)
        if name.startswith("$"):
            raise InvalidStreamName(name, "names starting with '$' are KurrentDB system streams")
        return name

    async def _events(
        self, stream: str | None, response_call: Any, deleted_raises: bool = False
    ) -> AsyncGenerator[Any, None]:
        """Iterate a client read (a coroutine giving a read response); a missing stream reads empty, and
        so does a tombstoned one unless ``deleted_raises`` (then ``StreamDeleted``).

        Callers use ``aclosing`` so the gRPC call is cancelled as soon as they stop reading.
        """
        with driver_errors(stream):
            try:
                response = await response_call
            except StreamIsDeletedError:
                if deleted_raises:
                    raise
                return
            try:
                async for event in response:
                    yield event
            except NotFoundError:
                return
            except StreamIsDeletedError:
                if deleted_raises:
                    raise
                return
            finally:
                await response.stop()

    async def _last_event(self, stream: str, deleted_raises: bool = False) -> RecordedEvent | None:
        client = self._open(stream)
        read = client.read_stream(stream, backwards=True, limit=1)
        async with aclosing(self._events(stream, read, deleted_raises)) as events:
            async for event in events:
                return to_record(event)
        return None

    async def _stored_in_stream(self, stream: str, batch: list[NewEvent]) -> dict[UUID, RecordedEvent]:
        """Which of the batch's ids the stream's newest ``id_check_window`` events hold.

        KurrentDB itself only compares ids at the place an append points at; this finds a retried batch
        or a concurrent duplicate (a command executed twice) in the same stream before it is written again.
        """
        if not batch or self.id_check_window == 0:
            return {}
        wanted = {event.id for event in batch}
        found: dict[UUID, RecordedEvent] = {}
        limit = sys.maxsize if self.id_check_window is None else min(self.id_check_window, sys.maxsize)
        read = self._open(stream).read_stream(stream, backwards=True, limit=limit)
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                if event.id in wanted and event.id not in found:
                    found[event.id] = to_record(event)
        return found

    async def _read_back(self, stream: str, batch: list[NewEvent], commit_position: int) -> list[RecordedEvent]:
        """The events an append wrote (or found already written), from the last one's commit position."""
        client = self._open(stream)
        last = None
        read = client.read_all(commit_position=commit_position, filter_exclude=())
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                last = event
                break
        if last is None or last.commit_position != commit_position or last.stream_name != stream:
            raise StoreUnavailable(
                f"KurrentDB: cannot read back the event at commit position {commit_position}", stream
            )
        found = [last]
        if len(batch) > 1:
            read = client.read_all(commit_position=commit_position, backwards=True, **exact_stream(stream))
            async with aclosing(self._events(stream, read)) as events:
                async for event in events:
                    if event.stream_name == stream:
                        found.append(event)
                        if len(found) == len(batch):
                            break
        written = [to_record(event) for event in reversed(found)]
        for event, recorded in zip(batch, written, strict=False):
            if recorded.id != event.id:  # the server matched the batch against other events
                raise DuplicateEventId(stream, event.id, None, None)
        if len(written) != len(batch):
            raise StoreUnavailable("KurrentDB: cannot read back the appended events", stream)
        return written

    # -- writing --------------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Iterable[NewEvent],
        expected_version: ExpectedVersionLike = ANY,
    ) -> AppendResult:
        self._check_name(stream)
        expected = check_expected_version(stream, expected_version)
        batch = check_events(stream, events, self.max_event_size)
        client = self._open(stream)
        if isinstance(expected, int) and expected > MAX_SERVER_INT:
            # No stream reaches that version (nor would it fit the protocol's 64 bits): a wrong guard.
            last = await self._last_event(stream)
            raise WrongExpectedVersion(stream, expected, None if last is None else last.version)
        stored = await self._stored_in_stream(stream, batch)
        if is_replay(stream, batch, expected, {id: (r.stream, r.version) for id, r in stored.items()}):
            return AppendResult.of(stream, [stored[e.id] for e in batch], replayed=True)
        if not batch:  # nothing to write: the guard is checked here, against the stream's head
            last = await self._last_event(stream, deleted_raises=True)
            enforce_expected_version(stream, expected, None if last is None else last.version)
            return AppendResult.of(stream, (), last)
        with driver_errors(stream, expected):  # the server checks the guard: WrongExpectedVersion from the table
            commit_position = await client.append_to_stream(
                stream, events=[to_new_event(e) for e in batch], current_version=to_stream_state(expected)
            )
        return AppendResult.of(stream, await self._read_back(stream, batch, commit_position))

    # -- reading --------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        read = check_read(self._check_name(stream), from_version, limit, backwards=backwards)
        client = self._open(stream)
        if read.matches_nothing:
            return
        if from_version is not None and from_version > MAX_SERVER_INT:
            if not backwards:
                return  # past any stream's end
            from_version = None  # backwards from beyond the end: from the last event
        read = client.read_stream(
            stream,
            stream_position=from_version,
            backwards=backwards,
            limit=sys.maxsize if limit is None or limit > sys.maxsize else limit,
        )
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                yield to_record(event)

    async def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        read = check_read(GLOBAL_LOG, after, limit, categories=categories)
        names = read.categories
        client = self._open()
        if read.matches_nothing or after - 1 > MAX_SERVER_INT:
            return  # nothing can match: an empty filter (guarantee 11) or past the end of any log (13)
        count = 0
        read = client.read_all(commit_position=after - 1 if after else None, **stream_filter(names))
        async with aclosing(self._events(None, read)) as events:
            async for event in events:
                if event.commit_position + 1 > after and is_user_event(event, names):
                    yield to_record(event)
                    count += 1
                    if limit is not None and count >= limit:
                        return

    async def subscribe(
        self,
        after: int = 0,
        categories: str | Iterable[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """A KurrentDB catch-up subscription to ``$all`` (filtered on the server), live once caught up."""
        read = check_read(GLOBAL_LOG, after, categories=categories)
        names = read.categories
        client = self._open()
        if read.matches_nothing or after - 1 > MAX_SERVER_INT:
            # Nothing can match (guarantees 11, 13): wait, without asking the server, until closed.
            await self._closing.wait()
            self._open()
        subscription = client.subscribe_to_all(commit_position=after - 1 if after else None, **stream_filter(names))
        async with aclosing(self._events(None, subscription)) as events:
            async for event in events:
                if event.commit_position + 1 > after and is_user_event(event, names):
                    yield to_record(event)
        raise StoreUnavailable("KurrentDB: the subscription ended")

    async def stream_version(self, stream: str) -> int | None:
        self._check_name(stream)
        last = await self._last_event(stream)
        return None if last is None else last.version

    async def head_position(self) -> int:
        client = self._open()
        read = client.read_all(backwards=True, limit=1, **stream_filter(None))
        async with aclosing(self._events(None, read)) as events:
            async for event in events:
                return int(event.commit_position) + 1
        return 0

    async def get_event(self, id: UUID, stream: str | None = None) -> RecordedEvent | None:
        """The newest stored event with this id, or ``None``.

        KurrentDB has no index by event id: with ``stream`` this reads that stream backwards, else it
        reads ``$all`` backwards, so a miss costs a scan of the whole log. Events of soft-deleted streams
        are found only without the hint.
        """
        client = self._open(stream)
        if stream is not None:
            self._check_name(stream)
            read = client.read_stream(stream, backwards=True)
        else:
            read = client.read_all(backwards=True, **stream_filter(None))
        async with aclosing(self._events(stream, read)) as events:
            async for event in events:
                if event.id == id and is_user_event(event, None):
                    return to_record(event)
        return None

    # -- epoch's own streams -------------------------------------------------------------------

    def companion_streams(self) -> KurrentDBCompanionStreams:
        """The ``$epoch-...`` streams where projections keep checkpoints and parked events on this server
        (found by ``epoch.projections`` through this method, as the SQL stores' database is found)."""
        return KurrentDBCompanionStreams(self)

    # -- lifecycle ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        with driver_errors(None), suppress(ProgrammingError):  # ProgrammingError: never connected
            await self._client.close()
