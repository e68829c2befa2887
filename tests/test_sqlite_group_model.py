"""Group commit against a model: appends queued together on the SQLite writer (one transaction, and
savepoints only when one of them fails) must end exactly as the same appends made one after another on
the memory store. Random guards, ids stored already (replays and duplicates elsewhere), conditions and
empty appends put failing appends at random places inside groups."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epoch import ANY, NO_STREAM, STREAM_EXISTS, open_store
from epoch.errors import EpochError
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import NewEvent
from epoch.stores import EventStore
from epoch.stores.sqlite import SQLiteEventStore
from epoch.testing import collect
from tests.test_sqlite_write_path import held_then_all_at_once

STREAMS = ["g-1", "g-2", "g-3"]
guards = st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS, 0, 1, 2, 3, 5])
# One operation: ("append", stream, guard, event count) | ("again", index of an earlier operation, stream)
# (its very events: a replay in place, a duplicate elsewhere) | ("claim", tag) (a condition on a tag)
# | ("many", [(stream, guard, event count), ...]) (append_many: all or nothing).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(STREAMS), guards, st.integers(0, 3)),
        st.tuples(st.just("again"), st.integers(0, 30), st.sampled_from(STREAMS), guards),
        st.tuples(st.just("claim"), st.sampled_from(["t-a", "t-b"])),
        st.tuples(
            st.just("many"), st.lists(st.tuples(st.sampled_from(STREAMS), guards, st.integers(0, 2)), max_size=3)
        ),
    ),
    min_size=1,
    max_size=30,
)


def batches(ops: list[tuple[Any, ...]]) -> list[list[NewEvent]]:
    """The events of each operation, built once so that both stores get the very same ids."""
    made: list[list[NewEvent]] = []
    for i, op in enumerate(ops):
        if op[0] == "append":
            made.append([NewEvent("Happened", b'{"n": %d}' % i, b"{}") for _ in range(op[3])])
        elif op[0] == "again":
            made.append(made[op[1] % len(made)] if made else [])
        elif op[0] == "many":
            made.append([NewEvent("Happened", b'{"m": %d}' % i, b"{}") for _, _, n in op[1] for _ in range(n)])
        else:
            made.append([NewEvent("Claimed", b"{}", b"{}", tags=(op[1],))])
    return made


def call(store: EventStore, op: tuple[Any, ...], events: list[NewEvent]) -> Any:
    if op[0] == "append":
        return store.append(op[1], events, op[2])
    if op[0] == "again":
        return store.append(op[2], events, op[3])
    if op[0] == "many":
        entries, taken = [], 0
        for stream, guard, n in op[1]:
            entries.append((stream, events[taken : taken + n], guard))
            taken += n
        return store.append_many(entries)
    return store.append_with_condition(
        f"claims-{op[1]}", events, AppendCondition(Query([QueryItem(tags=(op[1],))]), None), ANY
    )


def outcome(result: Any) -> Any:
    if isinstance(result, EpochError):
        return type(result).__name__, str(result)
    if isinstance(result, BaseException):
        raise result
    if isinstance(result, list):  # append_many's
        return [(r.version, r.positions) for r in result]
    return result.version, result.positions


async def run(ops: list[tuple[Any, ...]], directory: Path) -> None:
    made = batches(ops)
    async with open_store("memory://") as model:
        expected = [outcome(r) for r in [await _settled(call(model, op, ev)) for op, ev in zip(ops, made, strict=True)]]
        model_log = [(e.stream, e.version, e.id) for e in await collect(model.read_all())]
    async with SQLiteEventStore(directory / "group.db", inline_writes=False) as store:
        results = await held_then_all_at_once(store, [call(store, op, ev) for op, ev in zip(ops, made, strict=True)])
        assert [outcome(r) for r in results] == expected
        assert [(e.stream, e.version, e.id) for e in await collect(store.read_all())] == model_log
    async with SQLiteEventStore(directory / "group.db") as reopened:  # what was committed, read back cold
        assert [(e.stream, e.version, e.id) for e in await collect(reopened.read_all())] == model_log


async def _settled(pending: Any) -> Any:
    try:
        return await pending
    except EpochError as exc:
        return exc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_a_group_ends_as_its_appends_one_after_another(ops: list[tuple[Any, ...]]) -> None:
    # A loop of its own, not asyncio.run: that would unset the loop a pytest-asyncio test may have set.
    loop = asyncio.new_event_loop()
    try:
        with tempfile.TemporaryDirectory() as directory:
            loop.run_until_complete(run(ops, Path(directory)))
    finally:
        loop.close()
