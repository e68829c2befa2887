"""Dynamic consistency boundaries on PostgreSQL (what the DCB contract cannot say): the schema of
migration 3, the plans of ``read_query`` and of the condition check (index scans, never a scan of
``epoch_events``), the tag and type locks (a plain append of a matching event and a conditional one wait
for each other), the visibility rule of DESIGN §5, racing claimants from many connections and OS
processes, and ``epoch copy`` carrying tags."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import (
    ANY,
    AppendCondition,
    AppendConditionFailed,
    InvalidEvent,
    NewEvent,
    Query,
    QueryItem,
    RecordedEvent,
    StoreUnavailable,
    WrongExpectedVersion,
    open_store,
)
from epoch.examples.users import DuplicateName
from epoch.examples.users.unique_names import RegisterUser, names_handler
from epoch.stores.copy import copy_store
from epoch.stores.postgres import PostgresEventStore, encode_position
from epoch.testing import collect
from tests.hostile import hostile_names, is_valid_name

pytestmark = [pytest.mark.postgres]

ROOT = Path(__file__).resolve().parent.parent


def tagged(type: str, *tags: str, data: bytes = b"{}") -> NewEvent:
    return NewEvent(type, data, tags=tags)


def claim_of(tag: str) -> AppendCondition:
    return AppendCondition(Query([QueryItem(tags=(tag,))]))


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.from_url(pg_dsn)
    try:
        yield store
    finally:
        await store.close()


# -- the schema -------------------------------------------------------------------------------------


async def test_erasing_events_erases_their_tags_from_the_index(pg: PostgresEventStore, pg_dsn: str) -> None:
    await pg.append("users-1", [tagged("Registered", "user:1", "name:ada"), tagged("Renamed", "user:1", "name:bo")])
    await pg.append("users-2", [tagged("Registered", "user:2", "name:cy")])
    await pg.truncate_before("users-1", 1)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT tag FROM epoch_event_tags ORDER BY 1").fetchall() == [
            ("name:bo",),
            ("name:cy",),
            ("user:1",),
            ("user:2",),
        ]
    await pg.delete_stream("users-1", hard=True)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT tag FROM epoch_event_tags ORDER BY 1").fetchall() == [("name:cy",), ("user:2",)]
    assert [e.stream for e in await collect(pg.read_query(Query([QueryItem(tags=("user:1",))])))] == []


async def test_tags_are_stored_in_the_row_and_the_tag_index(pg: PostgresEventStore, pg_dsn: str) -> None:
    result = await pg.append("users-1", [tagged("Registered", "user:1", "name:ada", "user:1"), tagged("Plain")])
    await pg.append("users-2", [NewEvent("Plain", b"{}")])
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT stream, version, tags FROM epoch_events ORDER BY xid, seq").fetchall()
        assert rows == [("users-1", 0, ["user:1", "name:ada"]), ("users-1", 1, None), ("users-2", 0, None)]
        index = conn.execute("SELECT tag, (xid::numeric * 4294967296 + seq)::bigint FROM epoch_event_tags ORDER BY 1")
        assert index.fetchall() == [("name:ada", result.positions[0]), ("user:1", result.positions[0])]
        versions = conn.execute("SELECT version, description FROM epoch_schema_version ORDER BY 1").fetchall()
        assert [v for v, _ in versions][:3] == [1, 2, 3]
        assert versions[2][1] == (
            "tags: epoch_events.tags, epoch_event_tags, the type index, tag and type locks, epoch_append_if"
        )


async def test_migration_3_keeps_the_events_of_version_2(pg_dsn: str) -> None:
    from epoch.stores.postgres.migrations import MIGRATIONS

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a database as 0.1/0.2 left it: migrations 1, 2
        conn.execute(
            "CREATE TABLE epoch_schema_version (version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, description, sql in MIGRATIONS[:2]:
            conn.execute(sql, prepare=False)
            conn.execute("INSERT INTO epoch_schema_version VALUES (%s, %s)", (version, description))
        conn.execute("SELECT epoch_append('old-1', -1, %s, %s, %s, %s)", ([uuid4()], ["Old"], [b"1"], [b""]))
    async with open_store(pg_dsn) as store:
        [old] = await collect(store.read_all())
        assert (old.stream, old.type, old.data, old.tags) == ("old-1", "Old", b"1", ())
        new = await store.append("old-1", [tagged("New", "t:1")], expected_version=0)
        assert [e.tags async for e in store.read_stream("old-1")] == [(), ("t:1",)]
        assert [e.position async for e in store.read_query(Query([QueryItem(tags=("t:1",))]))] == [new.position]
        assert [e.data async for e in store.read_query(Query([QueryItem(types=("Old",))]))] == [b"1"]


# -- plans: served by an index ----------------------------------------------------------------------


async def _fill_for_plans(pg: PostgresEventStore, pg_dsn: str) -> None:
    """Enough events (4,000 over 200 tags and 20 types) that the planner prefers indexes where they help."""
    for chunk in range(40):
        await pg.append(
            f"s-{chunk}",
            [tagged(f"Type{i % 20}", f"tag:{(chunk * 100 + i) % 200}", "common") for i in range(100)],
        )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE epoch_events")
        conn.execute("ANALYZE epoch_event_tags")


def _plan(pg_dsn: str, sql: str, params: dict[str, object]) -> str:
    with psycopg.connect(pg_dsn) as conn, psycopg.ClientCursor(conn) as cur:
        cur.execute("EXPLAIN (COSTS OFF) " + sql, params)
        return "\n".join(row[0] for row in cur.fetchall())


async def test_read_query_plans_use_the_tag_and_type_indexes(pg: PostgresEventStore, pg_dsn: str) -> None:
    from epoch.stores.postgres.dcb import _page_query

    await _fill_for_plans(pg, pg_dsn)
    by_tag = _plan(pg_dsn, *_page_query(Query([QueryItem(tags=("tag:7",))]), 0, 1000))
    assert "epoch_event_tags_pkey" in by_tag, by_tag
    assert "Seq Scan" not in by_tag, by_tag
    by_type = _plan(pg_dsn, *_page_query(Query([QueryItem(types=("Type3", "Type4"))]), 0, 1000))
    assert by_type.count("epoch_events_type_idx") == 2, by_type
    assert "Seq Scan" not in by_type, by_type
    both = _plan(pg_dsn, *_page_query(Query([QueryItem(types=("Type3",), tags=("tag:7", "common"))]), 0, 1000))
    assert "epoch_event_tags_pkey" in both and "Seq Scan" not in both, both
    # What the store reads through these plans is what the query selects.
    found = await collect(pg.read_query(Query([QueryItem(types=("Type3",), tags=("tag:3", "common"))])))
    assert [(e.stream, e.version) for e in found] == [(f"s-{c}", 3) for c in range(0, 40, 2)]


async def test_the_condition_check_uses_the_indexes(pg: PostgresEventStore, pg_dsn: str) -> None:
    await _fill_for_plans(pg, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # The plans of the statements epoch_first_match runs inside the function, as the server logs them
        # (auto_explain, loaded into this session: the test cluster's user is a superuser).
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_level = notice")
        conn.execute("SET client_min_messages = notice")
        plans: list[str] = []
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        first = conn.execute(
            "SELECT * FROM epoch_first_match(%s::jsonb, 0, 0)",
            ('[{"types": [], "tags": ["tag:9"]}, {"types": ["Type5"], "tags": []}]',),
        ).fetchall()
    [event] = [e async for e in pg.read_stream("s-0", from_version=5, limit=1)]  # Type5 comes before tag:9
    assert [encode_position(*row) for row in first] == [event.position]
    nested = [p for p in plans if "epoch_event_tags" in p or "epoch_events_type_idx" in p]
    assert any("Index" in p and "epoch_event_tags_pkey" in p for p in nested), plans
    assert any("epoch_events_type_idx" in p for p in nested), plans
    assert not any("Seq Scan on epoch_events" in p for p in plans), [p for p in plans if "Seq Scan" in p]


# -- locks ------------------------------------------------------------------------------------------


async def test_a_condition_check_waits_for_an_open_append_of_a_matching_event(pg_dsn: str) -> None:
    """The race the locks close: a plain append has inserted a matching event and not yet committed."""
    gate = asyncio.Event()
    inserted = asyncio.Event()

    async def hold() -> None:
        inserted.set()
        await gate.wait()

    async with open_store(pg_dsn) as writer, open_store(pg_dsn) as claimant:
        assert isinstance(writer, PostgresEventStore)
        writer._before_commit = hold
        plain = asyncio.create_task(writer.append("users-1", [tagged("UsernameClaimed", "username:ada")]))
        await inserted.wait()
        check = asyncio.create_task(
            claimant.append_with_condition(
                "users-2", [tagged("UsernameClaimed", "username:ada")], claim_of("username:ada")
            )
        )
        await asyncio.sleep(0.3)
        assert not check.done()  # waiting for the writer's shared lock on the tag
        gate.set()
        written = await plain
        with pytest.raises(AppendConditionFailed) as info:
            await check
        assert (info.value.stream, info.value.after, info.value.position) == ("users-2", None, written.position)
        assert await claimant.stream_version("users-2") is None


async def test_a_plain_append_waits_for_a_condition_holding_its_tag(pg: PostgresEventStore, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        # What epoch_append_if holds from its check to its commit: the tag's exclusive lock.
        conn.execute("SELECT pg_advisory_xact_lock(epoch_tag_lock_key('username:ada'))")
        plain = asyncio.create_task(pg.append("users-1", [tagged("UsernameClaimed", "username:ada")]))
        other = await pg.append("users-3", [tagged("UsernameClaimed", "username:bob")])  # another tag: no wait
        await asyncio.sleep(0.3)
        assert not plain.done()
        conn.commit()
    written = await plain
    assert written.position > other.position  # its transaction id was taken after the lock
    untagged = asyncio.create_task(pg.append("users-4", [NewEvent("Other", b"{}")]))
    assert (await untagged).version == 0


async def test_a_type_only_condition_locks_the_type(pg: PostgresEventStore, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(epoch_type_lock_key('CourseClosed'))")
        plain = asyncio.create_task(pg.append("course-1", [NewEvent("CourseClosed", b"{}")]))
        await asyncio.sleep(0.3)
        assert not plain.done()  # an untagged event of the type takes the type's shared lock
        conn.commit()
    await plain
    condition = AppendCondition(Query([QueryItem(types=("CourseClosed",))]))
    with pytest.raises(AppendConditionFailed):
        await pg.append_with_condition("course-2", [NewEvent("Subscribed", b"{}")], condition)


async def test_query_all_conditions_lock_the_table_against_inserts(pg: PostgresEventStore, pg_dsn: str) -> None:
    await pg.append("a-1", [NewEvent("T", b"{}")])
    head = await pg.head_position()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("LOCK TABLE epoch_events IN SHARE ROW EXCLUSIVE MODE")  # as epoch_append_if takes it
        plain = asyncio.create_task(pg.append("b-1", [NewEvent("Untagged", b"{}")]))
        await asyncio.sleep(0.3)
        assert not plain.done()
        conn.commit()
    await plain
    with pytest.raises(AppendConditionFailed) as info:
        await pg.append_with_condition("c-1", [NewEvent("T", b"{}")], AppendCondition(Query.all(), after=head))
    assert info.value.position == (await pg.head_position())


async def test_plain_appends_of_one_tag_do_not_wait_for_each_other(pg_dsn: str) -> None:
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    async with open_store(pg_dsn) as holder, open_store(pg_dsn) as other:
        assert isinstance(holder, PostgresEventStore)
        holder._before_commit = hold
        held = asyncio.create_task(holder.append("a-1", [tagged("T", "hot")]))
        await asyncio.sleep(0.1)
        done = await asyncio.wait_for(other.append("b-1", [tagged("T", "hot")]), 5)  # shared: no wait
        assert done.version == 0
        gate.set()
        await held


# -- visibility (DESIGN §5) -------------------------------------------------------------------------


def hold_open(dsn: str) -> tuple[psycopg.Connection[tuple[object, ...]], int, int]:
    """A transaction with an id, left open (a slow job elsewhere): the connection, its xid and its pid."""
    blocker = psycopg.connect(dsn)
    row = blocker.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None
    return blocker, int(row[0]), blocker.info.backend_pid


def held_back(stream: str, position: int, xid: int, pid: int) -> str:
    """The whole message of a condition refused by an event an open transaction hides (the age a pattern)."""
    return (
        re.escape(
            f"{stream}: append condition refused by an event matching its query at position {position}, which"
            f" readers cannot see yet: the log's visibility is held back by an open transaction (xid {xid},"
            f" pid {pid}, open for "
        )
        + r"\d+\.\d"
        + re.escape(
            "s); a read cannot return that event until that transaction ends, so deciding again now would fail"
            " the same way (docs/stores/postgresql.md, 'Long transactions and conditions')"
        )
    )


async def test_a_committed_event_readers_cannot_see_yet_still_refuses_the_condition(pg_dsn: str) -> None:
    async with open_store(pg_dsn + "?visibility_timeout=0.1") as store:
        blocker, xid, pid = hold_open(pg_dsn)
        with blocker:
            written = await store.append("users-1", [tagged("UsernameClaimed", "username:ada")])
            # Committed, but held back from readers by the open transaction...
            assert await collect(store.read_query(Query([QueryItem(tags=("username:ada",))]))) == []
            # ...and seen by the check, which reads what is committed: refused, saying why no read shows it.
            with pytest.raises(StoreUnavailable) as info:
                await store.append_with_condition(
                    "users-2", [tagged("UsernameClaimed", "username:ada")], claim_of("username:ada")
                )
            assert re.fullmatch(held_back("users-2", written.position, xid, pid), str(info.value)), str(info.value)
            assert info.value.stream == "users-2"
            assert await store.stream_version("users-2") is None
            blocker.rollback()
        [seen] = await collect(store.read_query(Query([QueryItem(tags=("username:ada",))])))
        assert seen.position == written.position
        with pytest.raises(AppendConditionFailed) as failed:  # visible now: the plain refusal
            await store.append_with_condition(
                "users-2", [tagged("UsernameClaimed", "username:ada")], claim_of("username:ada")
            )
        assert (failed.value.stream, failed.value.after, failed.value.position) == ("users-2", None, written.position)


async def test_a_decision_held_back_by_an_open_transaction_fails_at_once_and_says_why(pg_dsn: str) -> None:
    async with open_store(pg_dsn + "?visibility_timeout=0.2") as store:
        handler = names_handler(store)
        blocker, xid, pid = hold_open(pg_dsn)
        with blocker:
            ada = await handler.execute(RegisterUser("a", "ada"))  # committed after the open transaction began
            start = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await handler.execute(RegisterUser("c", "ada"))
            elapsed = time.monotonic() - start
            assert await store.stream_version("user-c") is None
            blocker.rollback()
        assert re.fullmatch(held_back("user-c", ada.position, xid, pid), str(info.value)), str(info.value)
        # One attempt: the read's wait and the check's, not 21 attempts of both (over 8 s here).
        assert elapsed < 1.5, elapsed
        with pytest.raises(DuplicateName):  # the transaction ended: the decision sees ada and refuses
            await handler.execute(RegisterUser("c", "ada"))


async def test_a_condition_refused_while_a_short_transaction_ends_is_a_plain_conflict(pg_dsn: str) -> None:
    """An event hidden only for a moment (a transaction about to end): the check waits for it to become
    visible, and the decision retries as in any race, with the event in its read."""
    async with open_store(pg_dsn + "?visibility_timeout=5") as store:
        handler = names_handler(store)
        blocker, _, _ = hold_open(pg_dsn)
        with blocker:
            await handler.execute(RegisterUser("a", "ada"))
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, blocker.rollback)
            with pytest.raises(DuplicateName):
                await handler.execute(RegisterUser("c", "ada"))
        blocker, _, _ = hold_open(pg_dsn)
        with blocker:
            written = await store.append("users-1", [tagged("UsernameClaimed", "username:bob")])
            loop.call_later(0.3, blocker.rollback)
            with pytest.raises(AppendConditionFailed) as info:
                await store.append_with_condition(
                    "users-2", [tagged("UsernameClaimed", "username:bob")], claim_of("username:bob")
                )
            assert info.value.position == written.position


# -- racing claimants -------------------------------------------------------------------------------


async def test_sixteen_connections_claim_one_tag_round_after_round(pg_dsn: str) -> None:
    stores = [await PostgresEventStore.from_url(pg_dsn + "?pool_max=1") for _ in range(16)]
    try:
        for round in range(15):
            tag = f"username:r{round}"

            async def attempt(i: int, store: PostgresEventStore, tag: str = tag, round: int = round) -> bool:
                try:
                    await store.append_with_condition(f"user-{round}x{i}", [tagged("Claimed", tag)], claim_of(tag))
                except AppendConditionFailed:
                    return False
                return True

            outcomes = await asyncio.gather(*(attempt(i, s) for i, s in enumerate(stores)))
            assert outcomes.count(True) == 1, (round, outcomes)
            found = await collect(stores[0].read_query(Query([QueryItem(tags=(tag,))])))
            assert [e.stream for e in found] == [f"user-{round}x{outcomes.index(True)}"]
    finally:
        for store in stores:
            await store.close()


async def test_claimants_mixed_with_plain_appends_keep_the_rule_and_stream_order(pg_dsn: str) -> None:
    """A winning claim (``after=None``) is the first event of its tag in the log, whoever else appends
    it meanwhile; per-stream order (guarantee 10) holds for every stream written."""
    async with open_store(pg_dsn + "?pool_max=24") as store:
        for round in range(10):
            tag = f"username:m{round}"

            async def claimant(i: int, tag: str = tag, round: int = round) -> int | None:
                try:
                    return (
                        await store.append_with_condition(f"c-{round}x{i}", [tagged("Claimed", tag)], claim_of(tag))
                    ).position
                except AppendConditionFailed as exc:
                    assert exc.position is not None
                    return None

            async def plain(i: int, tag: str = tag) -> int:
                return (
                    await store.append(f"shared-{i % 2}", [tagged("Mentioned", tag)], expected_version=ANY)
                ).position

            results = await asyncio.gather(*(claimant(i) for i in range(16)), *(plain(i) for i in range(8)))
            won = [p for p in results[:16] if p is not None]
            assert len(won) <= 1, (round, results)
            matching = await collect(store.read_query(Query([QueryItem(tags=(tag,))])))
            assert len(matching) == 8 + len(won)
            if won:
                assert matching[0].position == won[0]
        log = await collect(store.read_all())
        for stream in {e.stream for e in log}:
            versions = [e.version for e in log if e.stream == stream]
            assert versions == list(range(len(versions))), stream
        assert [e.position for e in log] == sorted({e.position for e in log})


async def test_claimants_in_four_processes(pg_dsn: str) -> None:
    rounds = 8
    async with open_store(pg_dsn):
        pass  # the schema exists before the workers race to use it
    start = time.time() + 3.0  # every worker has connected by then
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.dcb_round_workers", pg_dsn, str(w), "4", str(rounds), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(w.communicate, timeout=240) for w in workers))
    winners: list[list[str]] = [[] for _ in range(rounds)]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        for r, line in enumerate(out.splitlines()):
            winners[r].extend(name for name in line.split() if name != "-")
    assert [len(w) for w in winners] == [1] * rounds, winners
    async with open_store(pg_dsn) as store:
        for r in range(rounds):
            found = await collect(store.read_query(Query([QueryItem(tags=(f"username:round-{r}",))])))
            assert [e.stream for e in found] == winners[r]


async def test_append_many_races_plain_appends_on_one_guard(pg: PostgresEventStore) -> None:
    """Nine writers guard ``b-1`` at version 0 (eight ``append_many``, one plain append): exactly one
    wins, and a losing ``append_many`` writes none of its other stream."""
    await pg.append("b-1", [NewEvent("T", b"{}")])
    for round in range(5):
        version = round

        async def many(i: int, version: int = version, round: int = round) -> bool:
            try:
                await pg.append_many(
                    [(f"a-{round}x{i}", [tagged("T", f"x{round}")], ANY), ("b-1", [NewEvent("M", b"%d" % i)], version)]
                )
            except WrongExpectedVersion as exc:
                assert (exc.stream, exc.expected, exc.actual) == ("b-1", version, version + 1)
                return False
            return True

        async def plain(version: int = version) -> bool:
            try:
                await pg.append("b-1", [NewEvent("P", b"{}")], expected_version=version)
            except WrongExpectedVersion:
                return False
            return True

        outcomes = await asyncio.gather(*(many(i) for i in range(8)), plain())
        assert outcomes.count(True) == 1, outcomes
        written = await collect(pg.read_query(Query([QueryItem(tags=(f"x{round}",))])))
        assert len(written) == outcomes[:8].count(True)
    assert [e.version async for e in pg.read_stream("b-1")] == list(range(6))


# -- copy -------------------------------------------------------------------------------------------


def _tags_log(events: list[RecordedEvent]) -> list[tuple[str, int, str, tuple[str, ...]]]:
    return [(e.stream, e.version, e.type, e.tags) for e in events]


async def test_copy_carries_tags_memory_to_postgres_to_postgres(pg_dsn: str, other_pg_dsn: str) -> None:
    async with open_store("memory://") as src, open_store(pg_dsn) as mid, open_store(other_pg_dsn) as dst:
        await src.append("users-1", [tagged("Registered", "user:1", "name:ada"), NewEvent("Plain", b"{}")])
        await src.append("users-2", [tagged("Registered", "user:2"), tagged("Renamed", "user:2", "name:bo")])
        await copy_store(src, mid, chunk_size=3)
        await copy_store(mid, dst)
        expected = _tags_log(await collect(src.read_all()))
        assert expected[0][3] == ("user:1", "name:ada")
        for store in (mid, dst):
            assert _tags_log(await collect(store.read_all())) == expected
            found = await collect(store.read_query(Query([QueryItem(tags=("user:2",))])))
            assert [(e.stream, e.version) for e in found] == [("users-2", 0), ("users-2", 1)]
            condition = AppendCondition(Query([QueryItem(tags=("name:bo",))]))
            with pytest.raises(AppendConditionFailed):
                await store.append_with_condition("users-3", [tagged("Registered", "name:bo")], condition)


# -- hostile tags -----------------------------------------------------------------------------------


@given(tags=st.lists(hostile_names, min_size=1, max_size=4))
async def test_hostile_tags_are_refused_or_round_trip_and_are_found(pg: PostgresEventStore, tags: list[str]) -> None:
    stream = f"hostile-{uuid4().hex}"
    head = await pg.head_position()
    if not all(is_valid_name(tag, 256) for tag in tags):
        with pytest.raises(InvalidEvent) as info:
            await pg.append(stream, [NewEvent("T", b"{}", tags=tuple(tags))])
        assert (info.value.stream, info.value.index) == (stream, 0)
        assert await pg.head_position() == head
        return
    written = await pg.append(stream, [NewEvent("T", b"{}", tags=tuple(tags))])
    unique = tuple(dict.fromkeys(tags))
    [back] = await collect(pg.read_stream(stream))
    assert back.tags == unique
    for tag in unique:
        found = await collect(pg.read_query(Query([QueryItem(tags=(tag,))]), after=head))
        assert [e.position for e in found] == [written.position]
    condition = AppendCondition(Query([QueryItem(tags=unique)]), head)
    with pytest.raises(AppendConditionFailed) as failed:
        await pg.append_with_condition(f"other-{uuid4().hex}", [], condition)
    assert failed.value.position == written.position


async def test_imported_tags_are_checked_and_de_duplicated(pg: PostgresEventStore) -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    twice = RecordedEvent("users-1", 0, 1, uuid4(), "T", b"{}", b"", at, ("a", "b", "a"))
    assert await pg.import_events([twice]) == [(await collect(pg.read_all()))[0].position]
    [back] = await collect(pg.read_query(Query([QueryItem(tags=("a",))])))
    assert (back.id, back.tags, back.recorded_at) == (twice.id, ("a", "b"), at)
    bad = RecordedEvent("users-2", 0, 2, uuid4(), "T", b"{}", b"", at, ("fine", ""))
    with pytest.raises(InvalidEvent) as info:
        await pg.import_events([bad])
    assert str(info.value) == "users-2: invalid event at index 0: tag '' must have 1 to 256 characters, not 0"
    assert await pg.stream_version("users-2") is None
