"""What only the SQLite store can show of the consistency boundaries (the contract is in
``epoch.testing.contract_dcb``): the query plans use the tag and type indexes, not a scan of the log;
migration 2 on a version-1 file; a failing condition under group commit rolls back alone; 16 claimants
of one tag in several OS processes, exactly one wins."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from epoch.errors import AppendConditionFailed, WrongExpectedVersion
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.records import NO_STREAM, NewEvent
from epoch.stores import open_store
from epoch.stores.sqlite import SCHEMA_VERSION, SQLiteEventStore
from epoch.stores.sqlite.dcb import query_sql
from epoch.stores.sqlite.schema import MIGRATIONS
from epoch.testing import collect
from epoch.testing import new_events as new
from tests.dcb_stores import check_query_against_log

ROOT = Path(__file__).resolve().parent.parent

TAG_RANGE = "SEARCH t USING PRIMARY KEY (tag=? AND position>? AND position<?)"
BY_POSITION = "SEARCH events USING INTEGER PRIMARY KEY (rowid=?)"
# A type-only item (schema 6): the type's entries after ?1 (one per append), then each one's range of positions.
TYPE_ENTRIES = "SEARCH g USING INDEX events_type (type=? AND position>?)"
TYPE_WALK = "SEARCH e USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"


def plan(path: Path, sql: str, names: tuple[str, ...]) -> list[str]:
    """The details of ``EXPLAIN QUERY PLAN`` for a statement of ``dcb.query_sql``."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", (0, 100, 10, *names)).fetchall()
    return [row[3] for row in rows]


async def filled(path: Path) -> None:
    async with SQLiteEventStore(path) as store:
        for i in range(200):
            tags = (f"course:{i % 10}", f"student:{i % 7}")
            await store.append(f"course-{i % 10}", [NewEvent(f"T{i % 3}", b"{}", tags=tags)])
    with sqlite3.connect(path) as connection:
        connection.execute("ANALYZE")  # the planner with statistics too: still the indexes


# -- the index, not a scan of the log ----------------------------------------------------------------


async def test_query_plans_use_the_indexes(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    await filled(path)
    [one_tag] = query_sql(Query([QueryItem(tags=("course:1",))]))
    assert plan(path, one_tag.page, one_tag.names) == [BY_POSITION, "LIST SUBQUERY 2", TAG_RANGE]
    assert plan(path, one_tag.first, one_tag.names) == ["CO-ROUTINE (subquery-1)", TAG_RANGE, "SEARCH (subquery-1)"]
    [two_tags_and_types] = query_sql(Query([QueryItem(types=("T1", "T2"), tags=("course:1", "student:2"))]))
    assert plan(path, two_tags_and_types.page, two_tags_and_types.names) == [
        BY_POSITION,
        "LIST SUBQUERY 3",
        TAG_RANGE,
        "CORRELATED SCALAR SUBQUERY 1",
        "SEARCH u USING PRIMARY KEY (tag=? AND position=?)",
        "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)",
    ]
    [types_only] = query_sql(Query([QueryItem(types=("T1", "T2"))]))
    for statement in (types_only.page, types_only.first):  # per type: its index entries, then each one's walk
        details = plan(path, statement, types_only.names)
        assert details.count(TYPE_ENTRIES) == 2 and details.count(TYPE_WALK) == 2, details
        assert not [d for d in details if d.startswith("SCAN events") or "TEMP B-TREE" in d], details
    [several] = query_sql(Query([QueryItem(tags=("course:1",)), QueryItem(types=("T0",)), QueryItem(tags=("x",))]))
    for statement in (several.page, several.first):
        details = plan(path, statement, several.names)
        assert not [d for d in details if d.startswith("SCAN events") or "TEMP B-TREE FOR ORDER BY" in d], details
        assert sum("USING PRIMARY KEY (tag=? AND position>? AND position<?)" in d for d in details) == 2
        assert details.count(TYPE_ENTRIES) == 1 and details.count(TYPE_WALK) == 1, details


async def test_query_sql_binds_each_name_once(tmp_path: Path) -> None:
    [sql] = query_sql(
        Query([QueryItem(types=("A",), tags=("x", "y")), QueryItem(types=("A", "B")), QueryItem(tags=("y",))])
    )
    assert sql.names == ("x", "y", "A", "B")
    assert sql.page.count("?4") == 1 and sql.page.count("?5") == 2
    # A is named by the first item's join and twice by the type-only arm (its entries, then its walk).
    assert sql.page.count("?6") == 3 and sql.page.count("?7") == 2
    assert query_sql(Query([QueryItem(tags=("x",))])) is query_sql(Query([QueryItem(tags=("x",))]))  # built once


async def test_a_large_query_is_split_within_sqlites_limits(tmp_path: Path) -> None:
    """More than 200 arms, or 30,000 names, make several statements; each item's tags past 8 are one count."""
    seats = query_sql(Query([QueryItem(tags=(f"seat:{i}",)) for i in range(1200)]))
    assert [sql.page.count(" UNION ALL ") + 1 for sql in seats] == [200] * 6
    assert [sql.names[0] for sql in seats] == [f"seat:{i}" for i in range(0, 1200, 200)]
    types = query_sql(Query([QueryItem(types=tuple(f"T{i}" for i in range(600)))]))  # one arm per type
    assert [len(sql.names) for sql in types] == [200] * 3
    wide = tuple(f"g{i}" for i in range(40_000))
    split = query_sql(Query([QueryItem(tags=wide[:20_000]), QueryItem(tags=wide[20_000:])]))
    assert [len(sql.names) for sql in split] == [20_000, 20_000]
    [nine] = query_sql(Query([QueryItem(tags=tuple(f"g{i}" for i in range(10)))]))
    assert nine.page.count("EXISTS") == 0 and " IN (?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)) = 9" in nine.page
    [eight] = query_sql(Query([QueryItem(tags=tuple(f"g{i}" for i in range(9)))]))
    assert eight.page.count("EXISTS") == 8 and "count(*)" not in eight.page
    path = tmp_path / "q.db"
    await filled(path)
    [many_tags] = query_sql(Query([QueryItem(tags=("course:1", *(f"student:{i}" for i in range(1500))))]))
    assert plan(path, many_tags.page, many_tags.names) == [
        BY_POSITION,
        "LIST SUBQUERY 3",
        TAG_RANGE,
        "CORRELATED SCALAR SUBQUERY 1",
        "SEARCH u USING PRIMARY KEY (tag=? AND position=?)",
    ]


# -- the schema ---------------------------------------------------------------------------------------


async def test_migration_2_on_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    number, _, statements = MIGRATIONS[0]
    assert number == 1 and [n for n, _, _ in MIGRATIONS][1] == 2  # this file then gets 2 and every later one
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO events (position, stream, version, id, type, data, metadata, category, recorded_at)"
            " VALUES (1, 'users-1', 0, ?, 'Registered', x'7b7d', x'', 'users', 0)",
            (b"\x01" * 16,),
        )
        connection.execute("INSERT INTO streams (stream, version) VALUES ('users-1', 0)")
        connection.execute("PRAGMA application_id = 1162891075")
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    async with SQLiteEventStore(path) as store:
        [old] = await collect(store.read_all())
        assert (old.stream, old.version, old.position, old.tags) == ("users-1", 0, 1, ())
        again = await store.append("users-1", [NewEvent("Renamed", b"{}", tags=("user:1",))], 0)
        found = await collect(store.read_query(Query([QueryItem(tags=("user:1",))])))
        assert [(e.version, e.position, e.tags) for e in found] == [(1, again.position, ("user:1",))]
        assert [e.position for e in await collect(store.read_query(Query([QueryItem(types=("Registered",))])))] == [1]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("SELECT tag, position FROM event_tags").fetchall() == [("user:1", 2)]
        assert connection.execute("SELECT tags FROM events ORDER BY position").fetchall() == [(None,), ("user:1",)]
    connection.close()


async def test_erasing_events_erases_their_tags_from_the_index(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    async with SQLiteEventStore(path) as store:
        await store.append("users-1", [NewEvent("Registered", b"{}", tags=("user:1", "name:ada"))])
        await store.append("users-1", [NewEvent("Renamed", b"{}", tags=("user:1", "name:bo"))])
        await store.append("users-2", [NewEvent("Registered", b"{}", tags=("user:2", "name:cy"))])
        await store.truncate_before("users-1", 1)
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT tag, position FROM event_tags ORDER BY tag").fetchall() == [
                ("name:bo", 2),
                ("name:cy", 3),
                ("user:1", 2),
                ("user:2", 3),
            ]
        connection.close()
        await store.delete_stream("users-1", hard=True)
        assert await collect(store.read_query(Query([QueryItem(tags=("user:1",))]))) == []
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT tag, position FROM event_tags ORDER BY tag").fetchall() == [
            ("name:cy", 3),
            ("user:2", 3),
        ]
    connection.close()


async def test_tags_are_stored_joined_and_indexed(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", [NewEvent("T", b"{}", tags=("a b", "c\u2028d", "a b")), NewEvent("T", b"{}")])
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT tags FROM events ORDER BY position").fetchall() == [
            ("a b\x1fc\u2028d",),
            (None,),
        ]
        assert connection.execute("SELECT tag, position FROM event_tags ORDER BY tag").fetchall() == [
            ("a b", 1),
            ("c\u2028d", 1),
        ]
    connection.close()


async def test_a_refused_append_leaves_no_tag_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", [NewEvent("T", b"{}", tags=("x",))])
        with pytest.raises(WrongExpectedVersion):
            await store.append("s-1", [NewEvent("T", b"{}", tags=("x", "y"))], NO_STREAM)
        with pytest.raises(AppendConditionFailed):
            await store.append_with_condition(
                "s-2", [NewEvent("T", b"{}", tags=("y",))], AppendCondition(Query([QueryItem(tags=("x",))]))
            )
        with pytest.raises(WrongExpectedVersion):
            await store.append_many([("s-3", [NewEvent("T", b"{}", tags=("z",))], NO_STREAM), ("s-1", [], NO_STREAM)])
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT tag, position FROM event_tags").fetchall() == [("x", 1)]
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (1,)
    connection.close()


# -- group commit -------------------------------------------------------------------------------------


async def test_a_failing_condition_rolls_back_only_its_own_append(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "g.db") as store:
        taken = await store.append("user-0", [NewEvent("Claimed", b"{}", tags=("username:ada",))])
        ada = AppendCondition(Query([QueryItem(tags=("username:ada",))]))
        bob = AppendCondition(Query([QueryItem(tags=("username:bob",))]))
        for _ in range(5):  # many rounds: some land in one group commit with the plain appends
            plain = [store.append(f"plain-{i}", new(2)) for i in range(20)]
            claims = [
                store.append_with_condition("user-1", [NewEvent("Claimed", b"{}", tags=("username:ada",))], ada),
                store.append_with_condition("user-2", [NewEvent("Claimed", b"{}", tags=("username:bob",))], bob),
            ]
            outcomes = await asyncio.gather(*plain, *claims, return_exceptions=True)
            assert all(not isinstance(o, BaseException) for o in outcomes[:20])
            assert isinstance(outcomes[20], AppendConditionFailed) and outcomes[20].position == taken.position
            if isinstance(outcomes[21], AppendConditionFailed):  # bob was claimed in an earlier round
                assert outcomes[21].stream == "user-2"
        assert await store.stream_version("user-1") is None
        assert await store.stream_version("user-2") == 0
        assert [await store.stream_version(f"plain-{i}") for i in range(20)] == [9] * 20


# -- OS processes -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("items", [1, 1200])  # 1,200: the claimed tag's arm in the query's last statement
async def test_claimants_in_several_processes_exactly_one_wins(tmp_path: Path, items: int) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    async with SQLiteEventStore(tmp_path / "claims.db") as store:
        await store.append("other-1", [NewEvent("Claimed", b"{}", tags=("username:bob",))])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.dcb_workers", url, str(worker), "4", str(items)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(4)
    ]
    for worker in workers:  # each has opened the store and waits: then all start at once
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, "go\n", 120) for w in workers))
    outcomes: list[str] = []
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        outcomes += json.loads(out)
    assert sorted(outcomes) == ["lost"] * 15 + ["won"]
    async with SQLiteEventStore(tmp_path / "claims.db") as store:
        claims = await collect(store.read_query(Query([QueryItem(tags=("username:ada",))])))
        assert len(claims) == 1 and claims[0].stream == f"user-{outcomes.index('won')}"
        assert [e.stream for e in await collect(store.read_all())] == ["other-1", claims[0].stream]


# -- against a reference -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_read_query_matches_a_scan_of_the_log(url: str, tmp_path: Path) -> None:
    """Random queries over 3,000 random events, pages of every size: what a filter of ``read_all`` finds."""
    rng = random.Random(13)
    names = ["a", "b", "c", "d", "e"]
    async with open_store(f"sqlite:///{tmp_path / 'ref.db'}" if url == "sqlite" else url) as store:
        for i in range(300):
            batch = [
                NewEvent(rng.choice(["T1", "T2", "T3"]), b"{}", tags=tuple(rng.sample(names, rng.randrange(4))))
                for _ in range(10)
            ]
            await store.append(f"s-{i % 17}", batch)
        log = await collect(store.read_all())
        for _ in range(60):
            items = [
                QueryItem(
                    types=tuple(rng.sample(["T1", "T2", "T3"], rng.randrange(3))),
                    tags=tuple(rng.sample(names, rng.randrange(3))),
                )
                for _ in range(rng.randrange(1, 4))
            ]
            query = Query(items)
            after = rng.choice([0, rng.randrange(3000)])
            limit = rng.choice([None, 1, 99, 100, 101, 1000, 1001, 2500])
            await check_query_against_log(store, log, query, after, limit)


# -- crashes (guarantee 7) ----------------------------------------------------------------------------

APPEND_MANY_FOREVER = """
    import asyncio, json, random, sys
    from epoch.records import ANY, NewEvent
    from epoch.stores import open_store

    async def main(url):
        rng = random.Random()
        async with open_store(url) as store:
            for call in range(10**9):
                sizes = [rng.randint(1, 150), rng.randint(1, 150)]
                entries = []
                for s, side in enumerate("ab"):
                    data = [json.dumps({"call": call, "sizes": sizes, "side": s, "i": i}) for i in range(sizes[s])]
                    tags = (f"call:{call}", f"side:{side}")
                    events = [NewEvent("Part", d.encode(), tags=tags) for d in data]
                    entries.append((f"{side}-{call % 3}", events, ANY))
                await store.append_many(entries)
                print(call, flush=True)

    asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
async def test_a_killed_writer_leaves_whole_append_many_calls(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APPEND_MANY_FOREVER), f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    for _ in range(20):  # the child reports each committed call and goes on at once
        assert await asyncio.to_thread(child.stdout.readline), child.stderr.read()
    child.send_signal(signal.SIGKILL)
    await asyncio.to_thread(child.wait, 10)
    child.stdout.close()
    child.stderr.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tag_rows = connection.execute("SELECT count(*) FROM event_tags").fetchone()[0]
    connection.close()
    async with SQLiteEventStore(path) as store:
        events = await collect(store.read_all())
        calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            calls[json.loads(event.data)["call"]].append(json.loads(event.data))
        assert len(calls) >= 20
        assert sorted(calls) == list(range(len(calls)))  # no call missing in between
        for call, parts in calls.items():  # both entries whole, or the call absent
            sizes = parts[0]["sizes"]
            assert [(p["side"], p["i"]) for p in parts] == [(s, i) for s in (0, 1) for i in range(sizes[s])], call
        assert tag_rows == 2 * len(events)  # the tag index holds exactly the stored events' tags
        last = max(calls)
        found = await collect(store.read_query(Query([QueryItem(tags=(f"call:{last}", "side:b"))])))
        assert len(found) == calls[last][-1]["sizes"][1]


async def test_a_tag_with_types_walks_the_tag_whatever_the_statistics(tmp_path: Path) -> None:
    """One tag on every event, one type on one event: statistics could favour driving from the type index,
    then sorting; the CROSS JOIN keeps the tag's range as the outer loop (probing each event by position inside)."""
    path = tmp_path / "skew.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", [NewEvent("Common", b"{}", tags=("hot",)) for _ in range(2000)])
        await store.append("s-1", [NewEvent("Rare", b"{}", tags=("hot",))])
    with sqlite3.connect(path) as connection:
        connection.execute("ANALYZE")
    connection.close()
    [sql] = query_sql(Query([QueryItem(types=("Rare",), tags=("hot",))]))
    assert plan(path, sql.page, sql.names) == [
        BY_POSITION,
        "LIST SUBQUERY 2",
        TAG_RANGE,  # the outer loop: the tag's range, in position order, no sort
        "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)",
    ]
