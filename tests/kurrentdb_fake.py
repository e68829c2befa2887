"""An in-process stand-in for a single KurrentDB node: the subset of its gRPC protocol ``kurrentdbclient``
uses for epoch's store, with KurrentDB's semantics as documented (and as this module's author understands
them). It proves that :mod:`epoch.stores.kurrentdb` maps epoch onto the *client* correctly; it proves
nothing about the server. Run tests/test_kurrentdb.py with ``EPOCH_TEST_KURRENTDB_URI`` for that.

Implemented (``event_store.client.streams.Streams``, the service stubs shipped in ``kurrentdbclient``):

- ``BatchAppend`` (what the asyncio client's ``append_to_stream`` calls): expected revision ``any``,
  ``no_stream``, ``stream_exists`` or an int; ``WrongExpectedVersion`` details with the current revision
  (or "no stream"); idempotent appends of the same ids at the same place (answered with the original
  commit position), for ``any``/``stream_exists`` when the first id is found in the stream; a
  ``MaxAppendSize`` (1 MiB by default, counted as data + metadata + 2 bytes per type-name character).
- ``Read`` of one stream (forwards/backwards, from a revision, ``start``/``end``, ``count``,
  ``stream_not_found`` for a missing or soft-deleted stream), of ``$all`` (forwards from a commit position,
  inclusive; backwards, exclusive; filters by stream name or event type, regex or prefixes) and catch-up
  subscriptions to ``$all`` (confirmation, then events after the position, exclusive, then
  ``caught_up``, then live events as they are appended, until the client cancels).
- ``Delete`` (soft delete): writes ``$metadata`` with ``$tb`` (keeping the stream's other metadata) to
  ``$$stream``; reads skip the truncated events; later appends continue the revisions; an
  expected-revision failure is reported the way the server does (``FAILED_PRECONDITION`` and a
  "WrongExpectedVersion ..." message).
- Stream metadata: an append of a ``$metadata`` event to ``$$stream`` replaces the stream's metadata as
  a whole (as the server does); reads honour ``$tb`` and ``$maxCount`` (only the newest ``$maxCount``
  events are read; ``$all`` keeps them all, as before a scavenge).
- ``deny_system_streams``: appends to and stream reads of ``$`` streams are refused with
  ``PERMISSION_DENIED`` / ``AccessDenied``, as for a user outside ``$admins``.
- ``Tombstone`` (hard delete): the expected revision as for ``Delete``; writes a ``$streamDeleted`` event
  into the stream itself (revision ``2**63 - 1``, as the server's ``EventNumber.DeletedStream``); from then
  on appends fail with ``StreamDeleted`` and reads, deletes and tombstones with "... is deleted"
  (``FAILED_PRECONDITION``), which the client raises as ``StreamIsDeletedError``. The events stay in
  ``$all`` until a scavenge, as on the server.
- ``$maxAge`` (whole seconds) is honoured by stream reads like ``$maxCount``.
- Scavenge: ``POST /admin/scavenge`` on the HTTP port (``admin_url``; the server serves HTTP and gRPC on
  one port, this fake on two) answers ``{"scavengeId": ..., "scavengeLink": ...}`` and removes from the
  log what ``$tb``, ``$maxCount`` and ``$maxAge`` exclude and every event of a tombstoned stream but its
  ``$streamDeleted``. The server scavenges in the background; the fake has finished when it answers.

Commit positions are byte-offset-like (not dense) and the log starts with a system event, so the store's
position mapping and its system-stream filtering are exercised. A soft-deleted stream counts as "no
stream" for expected-revision checks.

Not implemented: ``Append`` (the sync client's path), stream subscriptions, gossip and
cluster discovery, persistent subscriptions, projections, TLS, authentication, link resolution.
"""

from __future__ import annotations

import bisect
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from kurrentdbclient.protos.v1 import shared_pb2
from kurrentdbclient.protos.v1 import streams_pb2 as pb
from kurrentdbclient.protos.v1 import streams_pb2_grpc as pbg

__all__ = ["FakeKurrentDB"]

NO_STREAM = -1
_TICKS_PER_SECOND = 10_000_000  # KurrentDB's "created": 100 ns ticks since the Unix epoch


@dataclass
class _Event:
    commit: int
    stream: str
    revision: int
    id: str
    type: str
    content_type: str
    data: bytes
    metadata: bytes
    created: int


DELETED_STREAM = 2**63 - 1  # the revision of a tombstone's $streamDeleted event (EventNumber.DeletedStream)


@dataclass
class _Stream:
    events: list[_Event] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """The newest ``$metadata`` event of ``$$name`` (KurrentDB replaces stream metadata as a whole)."""
    next_revision: int = 0
    """The revision of the next event (``events`` loses its oldest ones to a scavenge)."""
    tombstoned: bool = False

    def kept(self, now: int) -> list[_Event]:
        """The events ``$tb``, ``$maxCount`` and ``$maxAge`` keep (``now`` in 100 ns ticks)."""
        events = [e for e in self.events if e.revision >= self.truncate_before]
        max_count = self.metadata.get("$maxCount")
        if isinstance(max_count, int) and max_count >= 1:
            events = events[-max_count:]
        max_age = self.metadata.get("$maxAge")
        if isinstance(max_age, int) and max_age >= 1:
            events = [e for e in events if e.created >= now - max_age * _TICKS_PER_SECOND]
        return events

    @property
    def truncate_before(self) -> int:
        """``$tb``: revisions below it are soft-deleted."""
        return int(self.metadata.get("$tb", 0))

    @property
    def current(self) -> int:
        """The revision of the last visible event, or ``NO_STREAM``."""
        last = self.next_revision - 1
        if last < 0 or last < self.truncate_before:
            return NO_STREAM
        return last

    def visible(self) -> list[_Event]:
        """What reads return: the events ``$tb``, ``$maxCount`` and ``$maxAge`` keep (as the server
        applies them at read time, before a scavenge removes the rest)."""
        return self.kept(time.time_ns() // 100)


class _Streams(pbg.StreamsServicer):
    def __init__(self, max_append_size: int) -> None:
        self.max_append_size = max_append_size
        self.lock = threading.Condition()
        self.log: list[_Event] = []
        self.commits: list[int] = []
        self.streams: dict[str, _Stream] = {}
        self.next_commit = 1024
        self.calls: dict[str, int] = {}
        self.scavenges = 0
        self.deny_system_streams = False
        """Refuse appends to and reads of ``$`` streams, as a server does for a user outside ``$admins``
        under the default ``$systemStreamAcl`` (``$all`` reads stay allowed here, for simplicity)."""
        with self.lock:
            self._write("$settings", "$settings", b'{"$userStreamAcl": {}}', b"", "application/json")

    # -- writing ------------------------------------------------------------------------------------

    def _write(self, name: str, type: str, data: bytes, metadata: bytes, content_type: str, id: str = "") -> _Event:
        stream = self.streams.setdefault(name, _Stream())
        event = _Event(
            self.next_commit,
            name,
            DELETED_STREAM if type == "$streamDeleted" else stream.next_revision,
            id or str(uuid.uuid4()),
            type,
            content_type,
            data,
            metadata,
            time.time_ns() // 100,
        )
        self.next_commit += 64 + len(name) + len(type) + len(data) + len(metadata)
        if type != "$streamDeleted":
            stream.next_revision += 1
        stream.events.append(event)
        self.log.append(event)
        self.commits.append(event.commit)
        if name.startswith("$$") and type == "$metadata":  # stream metadata: $tb, $maxCount, ...
            self.streams.setdefault(name[2:], _Stream()).metadata = json.loads(data)
        self.lock.notify_all()
        return event

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def BatchAppend(self, request_iterator: Iterator[pb.BatchAppendReq], context: Any) -> Iterator[pb.BatchAppendResp]:
        self._count("BatchAppend")
        for request in request_iterator:
            response = self._batch_append(request)
            response.correlation_id.CopyFrom(request.correlation_id)
            yield response

    def _batch_append(self, request: pb.BatchAppendReq) -> pb.BatchAppendResp:
        options = request.options
        name = options.stream_identifier.stream_name.decode()
        kind = options.WhichOneof("expected_stream_position")
        messages = list(request.proposed_messages)
        ids = [m.id.string for m in messages]
        response = pb.BatchAppendResp()
        if self.deny_system_streams and name.startswith("$"):
            response.error.code = grpc.StatusCode.PERMISSION_DENIED.value[0]
            response.error.message = "Access Denied"
            response.error.details.Pack(shared_pb2.AccessDenied())
            return response
        size = sum(len(m.data) + len(m.custom_metadata) + 2 * len(m.metadata["type"]) for m in messages)
        if size > self.max_append_size:
            response.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.error.message = "Maximum Append Size Exceeded"
            response.error.details.Pack(shared_pb2.MaximumAppendSizeExceeded(maxAppendSize=self.max_append_size))
            return response
        with self.lock:
            stream = self.streams.get(name)
            if stream is not None and stream.tombstoned:
                response.error.code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                response.error.message = f"Event stream '{name}' is deleted."
                response.error.details.Pack(shared_pb2.StreamDeleted())
                return response
            current = NO_STREAM if stream is None else stream.current
            if stream is not None and messages:
                replay = self._replay(stream, kind, options.stream_position, ids)
                if replay is not None:
                    response.success.current_revision = replay.revision
                    response.success.position.commit_position = replay.commit
                    response.success.position.prepare_position = replay.commit
                    return response
            ok = (
                kind == "any"
                or (kind == "no_stream" and current == NO_STREAM)
                or (kind == "stream_exists" and current != NO_STREAM)
                or (kind == "stream_position" and current == options.stream_position)
            )
            if not ok:
                details = shared_pb2.WrongExpectedVersion()
                if current == NO_STREAM:
                    details.current_no_stream.SetInParent()
                else:
                    details.current_stream_revision = current
                response.error.code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                response.error.message = "WrongExpectedVersion"
                response.error.details.Pack(details)
                return response
            last = None
            for message, id in zip(messages, ids, strict=True):
                last = self._write(
                    name,
                    message.metadata["type"],
                    message.data,
                    message.custom_metadata,
                    message.metadata["content-type"],
                    id,
                )
            assert last is not None
            response.success.current_revision = last.revision
            response.success.position.commit_position = last.commit
            response.success.position.prepare_position = last.commit
            return response

    @staticmethod
    def _replay(stream: _Stream, kind: str | None, revision: int, ids: list[str]) -> _Event | None:
        """The last event of an earlier identical append at the place this one points at, if any."""
        if kind == "stream_position":
            start = revision + 1
        elif kind == "no_stream":
            start = 0
        else:  # any / stream_exists: where the first id already is, if it is in this stream
            start = next((e.revision for e in stream.events if e.id == ids[0]), stream.next_revision)
        window = [e for e in stream.events if start <= e.revision < start + len(ids)]
        if len(window) == len(ids) and [e.id for e in window] == ids:
            return window[-1]
        return None

    def Delete(self, request: pb.DeleteReq, context: Any) -> pb.DeleteResp:
        self._count("Delete")
        options = request.options
        name = options.stream_identifier.stream_name.decode()
        kind = options.WhichOneof("expected_stream_revision")
        with self.lock:
            stream = self.streams.get(name)
            if stream is not None and stream.tombstoned:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{name}' is deleted.")
            current = NO_STREAM if stream is None else stream.current
            expected = {"any": -2, "no_stream": -1, "stream_exists": -4}.get(kind or "", options.revision)
            ok = (
                kind == "any"
                or (kind == "no_stream" and current == NO_STREAM)
                or (kind == "stream_exists" and current != NO_STREAM)
                or (kind == "revision" and current == options.revision)
            )
            if not ok:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Delete failed due to WrongExpectedVersion. Stream: {name}, "
                    f"Expected version: {expected}, Actual version: {current}",
                )
            response = pb.DeleteResp()
            if stream is None or current == NO_STREAM:
                response.no_position.SetInParent()
                return response
            # The server keeps the stream's other metadata ($maxCount, ...) and adds the truncation point.
            kept = json.dumps({**stream.metadata, "$tb": current + 1}).encode()
            meta = self._write(f"$${name}", "$metadata", kept, b"", "application/json")
            response.position.commit_position = meta.commit
            response.position.prepare_position = meta.commit
            return response

    def Tombstone(self, request: pb.TombstoneReq, context: Any) -> pb.TombstoneResp:
        self._count("Tombstone")
        options = request.options
        name = options.stream_identifier.stream_name.decode()
        kind = options.WhichOneof("expected_stream_revision")
        with self.lock:
            stream = self.streams.get(name)
            if stream is not None and stream.tombstoned:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{name}' is deleted.")
            current = NO_STREAM if stream is None else stream.current
            expected = {"any": -2, "no_stream": -1, "stream_exists": -4}.get(kind or "", options.revision)
            ok = (
                kind == "any"
                or (kind == "no_stream" and current == NO_STREAM)
                or (kind == "stream_exists" and current != NO_STREAM)
                or (kind == "revision" and current == options.revision)
            )
            if not ok:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Tombstone failed due to WrongExpectedVersion. Stream: {name}, "
                    f"Expected version: {expected}, Actual version: {current}",
                )
            event = self._write(name, "$streamDeleted", b"", b"", "application/octet-stream")
            self.streams[name].tombstoned = True
            response = pb.TombstoneResp()
            response.position.commit_position = event.commit
            response.position.prepare_position = event.commit
            return response

    def scavenge(self) -> str:
        """Remove what ``$tb``, ``$maxCount``, ``$maxAge`` and tombstones exclude from the log; the scavenge id."""
        with self.lock:
            now = time.time_ns() // 100
            gone: set[int] = set()
            for name, stream in self.streams.items():
                if name.startswith("$"):
                    continue
                if stream.tombstoned:
                    kept = [e for e in stream.events if e.type == "$streamDeleted"]
                else:
                    kept = stream.kept(now)
                gone.update(e.commit for e in stream.events if e not in kept)
                stream.events = kept
            self.log = [e for e in self.log if e.commit not in gone]
            self.commits = [e.commit for e in self.log]
            self.scavenges += 1
        return str(uuid.uuid4())

    # -- reading ------------------------------------------------------------------------------------

    def Read(self, request: pb.ReadReq, context: Any) -> Iterator[pb.ReadResp]:
        self._count("Read")
        options = request.options
        subscribe = options.WhichOneof("count_option") == "subscription"
        if options.WhichOneof("stream_option") == "stream":
            if subscribe:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake has no stream subscriptions")
            if self.deny_system_streams and options.stream.stream_identifier.stream_name.startswith(b"$"):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "Access Denied")
            try:
                yield from self._read_stream(options)
            except _Deleted as deleted:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{deleted.args[0]}' is deleted.")
        elif subscribe:
            yield from self._subscribe_all(options, context)
        else:
            yield from self._read_all(options)

    def _read_stream(self, options: pb.ReadReq.Options) -> Iterator[pb.ReadResp]:
        name = options.stream.stream_identifier.stream_name.decode()
        with self.lock:
            stream = self.streams.get(name)
            if stream is not None and stream.tombstoned:
                raise _Deleted(name)
            visible = [] if stream is None else stream.visible()
        if not visible:
            response = pb.ReadResp()
            response.stream_not_found.stream_identifier.stream_name = name.encode()
            yield response
            return
        which = options.stream.WhichOneof("revision_option")
        backwards = options.read_direction == pb.ReadReq.Options.Backwards
        if backwards:
            start = visible[-1].revision if which != "revision" else options.stream.revision
            chosen = [e for e in reversed(visible) if e.revision <= start]
        else:
            start = (
                0 if which == "start" else options.stream.revision if which == "revision" else visible[-1].revision + 1
            )
            chosen = [e for e in visible if e.revision >= start]
        for event in chosen[: options.count]:
            yield _read_resp(event)

    def _read_all(self, options: pb.ReadReq.Options) -> Iterator[pb.ReadResp]:
        match = _matcher(options)
        backwards = options.read_direction == pb.ReadReq.Options.Backwards
        which = options.all.WhichOneof("all_option")
        with self.lock:
            if which == "position":
                at = bisect.bisect_left(self.commits, options.all.position.commit_position)
                chosen = self.log[:at][::-1] if backwards else self.log[at:]
            elif backwards or which == "end":
                chosen = [] if not backwards else self.log[::-1]
            else:
                chosen = list(self.log)
        sent = 0
        for event in chosen:
            if sent >= options.count:
                return
            if match(event):
                sent += 1
                yield _read_resp(event)

    def _subscribe_all(self, options: pb.ReadReq.Options, context: Any) -> Iterator[pb.ReadResp]:
        match = _matcher(options)
        which = options.all.WhichOneof("all_option")
        with self.lock:
            if which == "position":
                cursor = bisect.bisect_right(self.commits, options.all.position.commit_position)
            else:
                cursor = len(self.log) if which == "end" else 0
        confirmation = pb.ReadResp()
        confirmation.confirmation.subscription_id = str(uuid.uuid4())
        yield confirmation
        caught_up = False
        while context.is_active():
            with self.lock:
                batch = self.log[cursor:]
                cursor += len(batch)
                if not batch and caught_up:
                    self.lock.wait(timeout=0.05)
                    continue
            for event in batch:
                if match(event):
                    yield _read_resp(event)
            if not caught_up:
                caught_up = True
                response = pb.ReadResp()
                response.caught_up.SetInParent()
                yield response


class _Deleted(Exception):
    """A read of a tombstoned stream (answered with "... is deleted")."""


class _Admin(http.server.BaseHTTPRequestHandler):
    """The HTTP admin endpoint the fake serves: ``POST /admin/scavenge``."""

    streams: _Streams

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/admin/scavenge":
            self.send_error(404)
            return
        scavenge_id = self.streams.scavenge()
        body = json.dumps({"scavengeId": scavenge_id, "scavengeLink": f"/admin/scavenge/{scavenge_id}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _matcher(options: pb.ReadReq.Options) -> Any:
    if options.WhichOneof("filter_option") != "filter":
        return lambda event: True
    which = options.filter.WhichOneof("filter")
    assert which is not None, "a filter option names its filter"
    expression = getattr(options.filter, which)
    key = "stream" if which == "stream_identifier" else "type"
    prefixes = tuple(expression.prefix)
    regex = re.compile(expression.regex) if expression.regex else None

    def match(event: _Event) -> bool:
        value: str = getattr(event, key)
        if prefixes:
            return value.startswith(prefixes)
        return regex is None or regex.search(value) is not None

    return match


def _read_resp(event: _Event) -> pb.ReadResp:
    response = pb.ReadResp()
    read_event = response.event
    recorded = read_event.event
    recorded.id.string = event.id
    recorded.stream_identifier.stream_name = event.stream.encode()
    recorded.stream_revision = event.revision
    recorded.prepare_position = event.commit
    recorded.commit_position = event.commit
    recorded.metadata["type"] = event.type
    recorded.metadata["content-type"] = event.content_type
    recorded.metadata["created"] = str(event.created)
    recorded.custom_metadata = event.metadata
    recorded.data = event.data
    read_event.commit_position = event.commit
    return response


class FakeKurrentDB:
    """A gRPC server on a free local port; ``uri`` is the connection string to give the client."""

    def __init__(self, max_append_size: int = 1024 * 1024, workers: int = 64) -> None:
        self.streams = _Streams(max_append_size)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fake-kurrentdb"))
        pbg.add_StreamsServicer_to_server(self.streams, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        handler = type("Admin", (_Admin,), {"streams": self.streams})
        self.admin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.admin_url = f"http://127.0.0.1:{self.admin.server_address[1]}"
        self.uri = f"kurrentdb://127.0.0.1:{self.port}?tls=false&admin_url={self.admin_url}"

    @property
    def calls(self) -> dict[str, int]:
        """How often each RPC was called."""
        return self.streams.calls

    def metadata(self, stream: str) -> dict[str, Any]:
        """A stream's metadata as the server keeps it (``{}`` when none was set)."""
        with self.streams.lock:
            found = self.streams.streams.get(stream)
            return {} if found is None else dict(found.metadata)

    def events(self) -> list[tuple[str, int, str]]:
        """The whole log (system events too) as ``(stream, revision, type)``."""
        with self.streams.lock:
            return [(e.stream, e.revision, e.type) for e in self.streams.log]

    def start(self) -> FakeKurrentDB:
        self.server.start()
        threading.Thread(target=self.admin.serve_forever, name="fake-kurrentdb-admin", daemon=True).start()
        return self

    def stop(self) -> None:
        self.admin.shutdown()
        self.admin.server_close()
        self.server.stop(grace=0).wait(5)

    def __enter__(self) -> FakeKurrentDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
