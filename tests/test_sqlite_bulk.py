"""The SQLite store's bulk paths (issue 11): the type index with one entry per type per append (schema
6), and the rows of a page turned into records (a stream's pages without the stream's name, the ids of
a page decoded in one call). What a type-only query finds is checked against a scan of the log, also
after erasure and import; the rows written are pinned."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch.queries import Query, QueryItem
from epoch.records import NO_STREAM, NewEvent, RecordedEvent
from epoch.stores.sqlite import SCHEMA_VERSION, SQLiteEventStore
from epoch.stores.sqlite.rows import _uuids
from epoch.stores.sqlite.schema import MIGRATIONS
from epoch.stores.sqlite.tags import type_firsts
from epoch.testing import collect
from tests.dcb_stores import check_query_against_log
from tests.hostile import valid_names

TYPES = ["T1", "T2", "T3"]


def events_of(*types: str, tags: tuple[str, ...] = ()) -> list[NewEvent]:
    return [NewEvent(name, b"{}", tags=tags) for name in types]


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        found = connection.execute(sql).fetchall()
    connection.close()
    return found


# -- which events carry the type index's entries --------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["A"], [None]),  # a one-event append: its own entry, as every event before schema 6
        (["A", "A", "A"], [0, 0, 100]),  # one type: the last event, pointing at the first
        (["O", "D", "D", "D"], [None, 0, 0, 101]),  # the benchmark's batch: an Opened, then deposits
        (["A", "B", "A", "C", "B"], [0, 0, 100, None, 101]),
        (["A", "B", "C"], [None, None, None]),  # every event the only one of its type
    ],
)
def test_type_firsts_mark_each_types_last_event_in_the_append(types: list[str], expected: list[int | None]) -> None:
    assert type_firsts(events_of(*types), 100) == expected


@given(st.lists(st.sampled_from(["a", "b", "c"]) | valid_names, min_size=1, max_size=40), st.integers(1, 2**62))
def test_type_firsts_give_each_type_one_entry_spanning_its_events(types: list[str], first_position: int) -> None:
    firsts = type_firsts(events_of(*types), first_position)
    assert len(firsts) == len(types)
    for name in set(types):
        at = [index for index, other in enumerate(types) if other == name]
        entries = [index for index in at if firsts[index] != 0]
        assert entries == [at[-1]]  # exactly one entry: the type's last event in the append
        assert firsts[at[-1]] == (None if len(at) == 1 else first_position + at[0])  # spanning all of them


async def test_appends_write_type_first_and_index_one_entry_per_type(tmp_path: Path) -> None:
    path = tmp_path / "types.db"
    async with SQLiteEventStore(path) as store:
        await store.append("a-1", events_of("Opened", "Deposited", "Deposited", "Deposited"), NO_STREAM)
        await store.append("a-1", events_of("Deposited"), 3)
        await store.append("a-2", events_of("X", "Y", "X"), NO_STREAM)
    assert rows(path, "SELECT position, type, type_first FROM events ORDER BY position") == [
        (1, "Opened", None),
        (2, "Deposited", 0),
        (3, "Deposited", 0),
        (4, "Deposited", 2),
        (5, "Deposited", None),
        (6, "X", 0),
        (7, "Y", None),
        (8, "X", 6),
    ]
    entries = "SELECT type, position FROM events INDEXED BY events_type WHERE type_first IS NOT 0 ORDER BY 1, 2"
    assert rows(path, entries) == [("Deposited", 4), ("Deposited", 5), ("Opened", 1), ("X", 8), ("Y", 7)]


# -- what a type-only query finds: a scan of the log ----------------------------------------------------


async def check_queries(store: SQLiteEventStore, rng: random.Random, rounds: int = 40) -> None:
    """Random type-only (and mixed) queries, at random places and limits: what a filter of ``read_all`` finds;
    a condition fails on the first such event."""
    log = await collect(store.read_all())
    head = log[-1].position if log else 0
    for _ in range(rounds):
        items = [QueryItem(types=tuple(rng.sample(TYPES, rng.randrange(1, 3))))]
        if rng.random() < 0.3:
            items.append(QueryItem(tags=("t",)))
        query = Query(items)
        after = rng.choice([0, rng.randrange(head + 1)])
        limit = rng.choice([None, 1, 7, 100, 1001])
        await check_query_against_log(store, log, query, after, limit)


async def test_type_queries_match_a_scan_after_erasure(tmp_path: Path) -> None:
    """Truncation, scavenging and hard deletes erase a stream's oldest events, cutting appends in two:
    each append's entry (its last event of a type) stays while any event of it does."""
    rng = random.Random(11)
    async with SQLiteEventStore(tmp_path / "erase.db") as store:
        for i in range(120):
            size = rng.choice([1, 1, 2, 5, 30])
            tags = ("t",) if rng.random() < 0.2 else ()
            await store.append(f"s-{i % 9}", events_of(*(rng.choice(TYPES) for _ in range(size)), tags=tags))
        await check_queries(store, rng)
        for number in range(0, 9, 2):
            version = await store.stream_version(f"s-{number}")
            assert version is not None
            await store.truncate_before(f"s-{number}", rng.randrange(1, version + 1))
        await store.delete_stream("s-3", hard=True)
        over = 0
        for limited, max_count in (("s-1", 7), ("s-5", 3)):  # limits cut appends too, when scavenged
            version = await store.stream_version(limited)
            assert version is not None and version + 1 > max_count
            over += version + 1 - max_count
            await store.set_stream_limits(limited, max_count=max_count)
        assert await store.scavenge() == over
        await check_queries(store, rng)
        for i in range(30):  # and appends after the erasure (s-3 stays deleted)
            await store.append(
                f"s-{i % 8 + (i % 8 >= 3)}", events_of(*(rng.choice(TYPES) for _ in range(rng.choice([1, 4]))))
            )
        await check_queries(store, rng)


async def test_type_queries_find_imported_events(tmp_path: Path) -> None:
    rng = random.Random(5)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    imported = [
        RecordedEvent(f"i-{s}", v, 0, uuid4(), rng.choice(TYPES), b"{}", b"", now) for s in range(4) for v in range(25)
    ]
    async with SQLiteEventStore(tmp_path / "import.db") as store:
        await store.append("own-1", events_of("T1", "T2", "T1"))
        await store.import_events(imported)
        await check_queries(store, rng)


async def test_migration_6_on_a_version_5_file(tmp_path: Path) -> None:
    """Events written before schema 6 (``type_first`` NULL) keep an entry each; later appends one per type."""
    path = tmp_path / "v5.db"
    with sqlite3.connect(path) as connection:
        for number, _, statements in MIGRATIONS:
            if number <= 5:
                for statement in statements:
                    connection.execute(statement)
        for position, name in enumerate(["T1", "T1", "T2"], 1):
            connection.execute(
                "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at)"
                " VALUES (?, 'old-1', ?, ?, ?, x'7b7d', x'', 'old', 0)",
                (position, position - 1, uuid4().bytes, name),
            )
        connection.execute("INSERT INTO streams (stream, version) VALUES ('old-1', 2)")
        connection.execute("PRAGMA application_id = 1162891075")
        connection.execute("PRAGMA user_version = 5")
    connection.close()
    async with SQLiteEventStore(path) as store:
        await store.append("new-1", events_of("T1", "T1", "T2"))
        found = await collect(store.read_query(Query([QueryItem(types=("T1",))])))
        assert [(e.stream, e.version, e.position) for e in found] == [
            ("old-1", 0, 1),
            ("old-1", 1, 2),
            ("new-1", 0, 4),
            ("new-1", 1, 5),
        ]
        await check_queries(store, random.Random(3), rounds=10)
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT sql FROM sqlite_master WHERE name = 'events_type'") == [
        ("CREATE INDEX events_type ON events (type, position) WHERE type_first IS NOT 0",)
    ]
    assert rows(path, "SELECT position, type_first FROM events ORDER BY position") == [
        (1, None),
        (2, None),
        (3, None),
        (4, 0),
        (5, 4),
        (6, None),
    ]


# -- rows to records ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 15, 16, 1000, 65_535, 65_536])
def test_a_pages_ids_are_decoded_in_one_call_at_every_array_size(count: int) -> None:
    ids = [uuid4() for _ in range(count)]
    assert _uuids([value.bytes for value in ids]) == ids


def test_ids_of_another_length_are_decoded_one_by_one() -> None:
    """Only a caller's own SQL can store such an id; it reads back as before (no error, no shifted ids)."""
    decoded = _uuids([b"\x01" * 16, b"\x02" * 15, b"\x03" * 17])
    assert [value.int for value in decoded] == [
        int.from_bytes(b"\x01" * 16, "big"),
        int.from_bytes(b"\x02" * 15, "big"),
        int.from_bytes(b"\x03" * 17, "big"),
    ]


async def test_stream_pages_carry_the_stream_name_and_tags(tmp_path: Path) -> None:
    """A stream's page does not read the name back: every record still has it, and its tags."""
    async with SQLiteEventStore(tmp_path / "pages.db") as store:
        written = [NewEvent("T", b"{}", id=uuid4(), tags=("x", "y") if i % 3 == 0 else ()) for i in range(2_500)]
        await store.append("rü-1 'quoted'", written)
        for backwards in (False, True):
            read = await collect(store.read_stream("rü-1 'quoted'", backwards=backwards))
            ordered = read[::-1] if backwards else read
            assert [(e.stream, e.version, e.id, e.tags) for e in ordered] == [
                ("rü-1 'quoted'", i, event.id, event.tags) for i, event in enumerate(written)
            ]
            assert [type(e.id) for e in read] == [UUID] * len(read)
