"""Copy a whole store into another (``epoch copy SRC DST``): any backend to any backend, resumable.

What is kept: every event (also those of soft-deleted streams), in the source's global order, with its
stream, version, id, type, data, metadata, tags and — when the destination can import (see
:class:`SupportsImport`) — its ``recorded_at``; and which versions of each stream are soft-deleted.
What is not: positions. Each store numbers its log its own way, so the copy gets new positions in the
same order; checkpoints taken against the source (projections) do not carry over — rebuild them.

Personal data: the keys of the source's key table (:class:`SupportsKeys`) are copied first, as they are
(ciphertext stays ciphertext: nothing is decrypted), so a subject forgotten in the source before the copy
has no key in the destination either and stays unreadable there. A source with keys and a destination
that keeps none is refused before anything is written.

Resuming: run the copy again. It finds the destination's last event in the source (by id) and carries on
after it, so an interrupted copy loses nothing and copies nothing twice (the destination writes each
chunk atomically; one that can only append writes a stream's deleted versions, then deletes them, and a
run stopped between the two makes the delete when it resumes). The same mechanism catches a copy up with
a source that kept growing. When that event was erased in the source meanwhile (a hard delete, a
truncation, a scavenge), the copy resumes after the newest event of the destination the source still
holds, and skips what the destination holds already.

Stream lifecycle (DESIGN §8). A source that lists its streams' lifecycle states (memory, SQLite,
PostgreSQL: ``lifecycle_states``) has them carried over at the end of every run, also those made after
the copy started: tombstones (hard deletes), truncations (and scavenges: the destination erases what the
source erased), soft deletes and limits. A stream whose oldest events were erased in the source lands at
the versions it has left (an importing destination starts it there; one that can only append refuses it
with ``ConfigurationError``); erased while the run copies, they make the destination refuse a chunk that
starts the stream later than the states the run read say, and the run reads them again and retries it.
Limits lifted in the source (the one state a stream can lose: deletes and truncations are for good) are
lifted in the destination too, from the destination's own list of states, or, on a KurrentDB destination
(which lists none), from its list of the streams whose metadata sets limits (``limited_streams``: a pass
over its log's index). A KurrentDB source lists no lifecycle state: only its soft deletes, as read, are
carried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from epoch.errors import ConfigurationError, WrongExpectedVersion
from epoch.records import ANY, NewEvent, RecordedEvent
from epoch.stores import EventStore
from epoch.stores._keys import keys_of
from epoch.stores._lifecycle import StreamLifecycle, lifecycle_states_of, limited_streams_of
from epoch.stores._sql import SupportsImport, importer_of

__all__ = ["CopyResult", "SupportsImport", "copy_store"]

_ALL_DELETED = 1 << 62
_REREADS = 3
"""How often a chunk the destination refuses is tried again with the source's lifecycle states read anew."""


@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_store` did."""

    copied: int
    """Events written by this run."""
    resumed: bool
    """True when the destination already held a partial copy, and this run continued it."""
    timestamps_preserved: bool
    """False when the destination cannot import: the copies were appended and got new ``recorded_at``."""
    carried: int = 0
    """Streams whose lifecycle state (a delete, a truncation, limits) this run carried over."""
    keys: int = 0
    """Personal-data keys copied (all of the source's, every run: the destination keeps those it has)."""


async def _resume_after(src: EventStore, dst: EventStore) -> tuple[int, set[object]]:
    """The source position after which to copy (0 for an empty destination, else after its last event),
    and the ids the destination holds that may come again after it (empty unless that event is gone)."""
    head = await dst.head_position()
    if head == 0:
        return 0, set()
    last: RecordedEvent | None = None
    async for event in dst.read_all(after=head - 1, limit=1):
        last = event
    if last is None:  # the newest events of the destination were erased there: look at all of them
        held = [event async for event in dst.read_all()]
    else:
        found = await src.get_event(last.id)
        if found is not None and (found.stream, found.version) == (last.stream, last.version):
            return found.position, set()
        held = [event async for event in dst.read_all()]
    for event in reversed(held):  # the newest one the source still holds (the others were erased there)
        found = await src.get_event(event.id)
        if found is not None and (found.stream, found.version) == (event.stream, event.version):
            return found.position, {e.id for e in held}
    raise ConfigurationError(
        "the destination store is not empty and is not a partial copy of the source: copy into an empty store"
    )


async def _states(src: EventStore) -> dict[str, StreamLifecycle] | None:
    listing = lifecycle_states_of(src)
    if listing is None:
        return None
    return {state.stream: state async for state in listing()}


async def _carry(dst: EventStore, states: dict[str, StreamLifecycle]) -> int:
    """Give the destination the source's lifecycle states; how many streams had one."""
    importer = importer_of(dst)
    for state in states.values():
        stream = state.stream
        if state.tombstoned:
            await dst.delete_stream(stream, hard=True)
            continue
        if state.first_stored > 0:
            await dst.truncate_before(stream, state.first_stored)
        if state.first_visible > state.first_stored:  # soft-deleted below first_visible
            if importer is not None:
                await importer.import_events([], {stream: state.first_visible})
            elif state.version is not None and state.first_visible > state.version:
                await dst.delete_stream(stream)
        await dst.set_stream_limits(stream, state.max_count, state.max_age)
    return len(states) + await _lift_limits(dst, states)


async def _lift_limits(dst: EventStore, states: dict[str, StreamLifecycle]) -> int:
    """Clear the destination's limits of the streams the source lists no state of (their limits were
    lifted there: the only state a stream can lose); how many. Deletes, truncations and tombstones are for
    good, so the destination's are the source's."""
    lifted = [stream for stream in await _limited(dst) if stream not in states]
    for stream in lifted:
        await dst.set_stream_limits(stream, None, None)
    return len(lifted)


async def _limited(dst: EventStore) -> list[str]:
    """The streams the destination limits now: from its lifecycle states, else (KurrentDB) from its list of
    limited streams; none when it has neither (a third party's store keeps the limits it has)."""
    listing = lifecycle_states_of(dst)
    if listing is not None:
        return [s.stream async for s in listing() if s.max_count is not None or s.max_age is not None]
    limited = limited_streams_of(dst)
    return [] if limited is None else await limited()


async def copy_store(
    src: EventStore,
    dst: EventStore,
    *,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> CopyResult:
    """Copy every event of ``src`` into ``dst`` in order (see the module docs); resumable by calling again.

    ``progress`` is called with the number of events copied so far after each chunk.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigurationError(f"copy_store(chunk_size=...) must be an int >= 1, not {chunk_size!r}")
    after, held = await _resume_after(src, dst)
    keys = await _copy_keys(src, dst, chunk_size)
    importer = importer_of(dst)
    states = await _states(src)
    first_visible: dict[str, int] = {}

    async def visible_from(stream: str) -> int:
        """The first version of ``stream`` that is not deleted (or erased) in the source."""
        if states is not None:
            state = states.get(stream)
            return 0 if state is None else state.first_visible
        if stream not in first_visible:
            value = _ALL_DELETED
            async for event in src.read_stream(stream, limit=1):
                value = event.version
            first_visible[stream] = value
        return first_visible[stream]

    if importer is None and after > 0:
        await _finish_delete(dst, visible_from)
    copied = 0
    chunk: list[RecordedEvent] = []

    async def boundaries() -> dict[str, int]:
        deletes: dict[str, int] = {}
        for event in chunk:
            boundary = min(await visible_from(event.stream), event.version + 1)
            if boundary > 0:
                deletes[event.stream] = boundary
        return deletes

    async def flush() -> None:
        nonlocal copied, states
        if not chunk:
            return
        if importer is not None:
            deletes = await boundaries()
            for attempt in range(_REREADS + 1):
                try:
                    await importer.import_events(chunk, deletes)
                    break
                except WrongExpectedVersion:
                    # The source may have erased a stream's first events (a truncation, a scavenge) since its
                    # states were read, and the chunk starts it later: read them again. Writing nothing, the
                    # import can be made again; unless it would be the same (it is no such erasure).
                    if attempt == _REREADS:
                        raise
                    states = await _states(src)
                    first_visible.clear()
                    before, deletes = deletes, await boundaries()
                    if deletes == before:
                        raise
        else:
            await _append_chunk(dst, chunk, visible_from)
        copied += len(chunk)
        chunk.clear()
        if progress is not None:
            progress(copied)

    async for event in src.read_all(after=after):
        if event.id in held:
            continue  # copied by an earlier run (resumed before it, see _resume_after)
        chunk.append(event)
        if len(chunk) >= chunk_size:
            await flush()
    await flush()
    carried = 0
    if states is not None:  # again: deletes and truncations made while this run copied count too
        carried = await _carry(dst, await _states(src) or {})
    return CopyResult(
        copied=copied, resumed=after > 0, timestamps_preserved=importer is not None, carried=carried, keys=keys
    )


async def _copy_keys(src: EventStore, dst: EventStore, chunk_size: int) -> int:
    """Copy every key of the source's key table, before any event (so no copied event is ever unreadable
    for want of a key that is still to come); the number copied."""
    source, target = keys_of(src), keys_of(dst)
    if source is None:
        return 0
    copied = 0
    chunk = []
    async for key in source.export_keys():
        if target is None:
            raise ConfigurationError(
                "the source holds personal-data keys and the destination store keeps none: "
                "its encrypted fields would become unreadable"
            )
        chunk.append(key)
        if len(chunk) >= chunk_size:
            await target.write_keys(chunk)
            copied, chunk = copied + len(chunk), []
    if chunk:
        assert target is not None
        await target.write_keys(chunk)
        copied += len(chunk)
    return copied


async def _finish_delete(dst: EventStore, visible_from: Callable[[str], Awaitable[int]]) -> None:
    """Make the soft delete an earlier run lost: it stopped between appending a stream's deleted versions
    and deleting them (the two steps of :func:`_append_chunk`), so the destination's newest event is the
    last of them, and it is still visible."""
    last = [event async for event in dst.read_all(after=await dst.head_position() - 1, limit=1)]
    if not last or last[0].version >= await visible_from(last[0].stream):
        return
    first = [event.version async for event in dst.read_stream(last[0].stream, limit=1)]
    if first and first[0] <= last[0].version:
        await dst.delete_stream(last[0].stream)


async def _append_chunk(
    dst: EventStore, chunk: list[RecordedEvent], visible_from: Callable[[str], Awaitable[int]]
) -> None:
    """Copy a chunk with plain appends (one per run of one stream) and soft deletes."""
    runs: list[list[RecordedEvent]] = []
    for event in chunk:
        if runs and runs[-1][-1].stream == event.stream:
            runs[-1].append(event)
        else:
            runs.append([event])
    for run in runs:
        stream = run[0].stream
        boundary = await visible_from(stream)
        before = [e for e in run if e.version < boundary]
        rest = [e for e in run if e.version >= boundary]
        for part, delete_after in ((before, True), (rest, False)):
            if not part:
                continue
            result = await dst.append(stream, [NewEvent(e.type, e.data, e.metadata, e.id, e.tags) for e in part], ANY)
            if result.version != part[-1].version:
                raise ConfigurationError(
                    f"{stream}: the copy landed at version {result.version}, not {part[-1].version}: "
                    "the destination already holds other events of this stream, or the source erased its "
                    "first events and the destination can only append"
                )
            if delete_after:
                await dst.delete_stream(stream)
