"""The SQLite store's shortcuts keep every guarantee: what the writer remembers between transactions (the
log head, streams' versions) is dropped when another connection commits, after a caller's own transaction
and after a rolled-back append; small reads run on the caller's thread without blocking its loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from epoch.errors import StoreUnavailable, WrongExpectedVersion
from epoch.records import NO_STREAM, AppendResult
from epoch.stores.sqlite import SQLiteEventStore
from epoch.testing import collect
from epoch.testing import new_events as new


def placed(result: AppendResult) -> tuple[int | None, int, tuple[int, ...]]:
    return result.version, result.position, result.positions


async def test_another_store_on_the_file_is_seen_by_the_writer(tmp_path: Path) -> None:
    """Two store objects are two connections, as two processes are: each sees what the other committed."""
    async with SQLiteEventStore(tmp_path / "two.db") as first, SQLiteEventStore(tmp_path / "two.db") as second:
        assert placed(await first.append("s-1", new(1), NO_STREAM)) == (0, 1, (1,))
        assert placed(await second.append("s-1", new(2), 0)) == (2, 3, (2, 3))
        with pytest.raises(WrongExpectedVersion) as stale:
            await first.append("s-1", new(1), 0)  # first's writer knew version 0: it must ask again
        assert (stale.value.expected, stale.value.actual) == (0, 2)
        assert placed(await first.append("s-1", new(1), 2)) == (3, 4, (4,))
        assert placed(await first.append("t-1", new(1), NO_STREAM)) == (0, 5, (5,))  # the head moved too
        await second.delete_stream("t-1", 0)
        with pytest.raises(WrongExpectedVersion) as deleted:
            await first.append("t-1", new(1), 0)
        assert (deleted.value.expected, deleted.value.actual) == (0, None)
        assert placed(await first.append("t-1", new(1), NO_STREAM)) == (1, 6, (6,))  # versions continue
        assert [e.position for e in await collect(second.read_all())] == [1, 2, 3, 4, 5, 6]


async def test_a_callers_transaction_is_seen_by_the_writer(tmp_path: Path) -> None:
    """``run_in_transaction`` writes through the writer's own connection, which ``data_version`` does not
    show: the writer forgets what it knew after every such transaction."""
    async with SQLiteEventStore(tmp_path / "own.db") as store:
        await store.append("s-1", new(1), NO_STREAM)
        await store.run_in_transaction(lambda c: c.execute("UPDATE streams SET version = 4 WHERE stream = 's-1'"))
        with pytest.raises(WrongExpectedVersion) as stale:
            await store.append("s-1", new(1), 0)
        assert (stale.value.expected, stale.value.actual) == (0, 4)


async def test_imported_events_are_seen_by_the_writer(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "from.db") as source, SQLiteEventStore(tmp_path / "to.db") as store:
        await source.append("s-1", new(3), NO_STREAM)
        recorded = await collect(source.read_stream("s-1"))
        assert placed(await store.append("s-1", new(1), NO_STREAM)) == (0, 1, (1,))
        assert await store.import_events(recorded[1:]) == [2, 3]
        assert placed(await store.append("s-1", new(1), 2)) == (3, 4, (4,))


async def test_a_rolled_back_append_leaves_the_writer_right(tmp_path: Path) -> None:
    """Appends racing for one stream in one group: the loser's savepoint is rolled back, and what the
    writer remembers of the stream and the head stays what was committed."""
    async with SQLiteEventStore(tmp_path / "race.db") as store:
        for round_ in range(20):
            results = await asyncio.gather(
                *(store.append(f"race-{round_}", new(2), NO_STREAM) for _ in range(4)), return_exceptions=True
            )
            won = [r for r in results if isinstance(r, AppendResult)]
            assert len(won) == 1
            assert sum(isinstance(r, WrongExpectedVersion) for r in results) == 3
            assert placed(won[0]) == (1, 3 * round_ + 2, (3 * round_ + 1, 3 * round_ + 2))
            assert placed(await store.append(f"race-{round_}", new(1), 1)) == (2, 3 * round_ + 3, (3 * round_ + 3,))
        assert await store.head_position() == 60


async def test_reads_from_many_threads_and_loops(tmp_path: Path) -> None:
    """Each caller thread reads on a connection of its own; all of them see every commit."""
    async with SQLiteEventStore(tmp_path / "threads.db") as store:
        await store.append("s-1", new(150), NO_STREAM)  # longer than the first page read on the caller's thread
        seen: list[tuple[int | None, int, int]] = []

        async def reads() -> tuple[int | None, int, int]:
            versions = [e.version for e in await collect(store.read_stream("s-1"))]
            assert versions == list(range(150))
            return await store.stream_version("s-1"), await store.head_position(), len(versions)

        def thread_main() -> None:
            seen.append(asyncio.run(reads()))

        threads = [threading.Thread(target=thread_main) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert seen == [(149, 150, 150)] * 4
        assert await reads() == (149, 150, 150)


async def test_a_closed_store_refuses_small_reads(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "closed.db")
    await store.append("s-1", new(1))
    assert await store.stream_version("s-1") == 0
    await store.close()
    with pytest.raises(StoreUnavailable) as closed:
        await store.stream_version("s-1")
    assert str(closed.value) == f"the SQLite store {store.path} is closed"
    with pytest.raises(StoreUnavailable) as closed_read:
        await collect(store.read_stream("s-1"))
    assert str(closed_read.value) == f"the SQLite store {store.path} is closed"


async def held_then_all_at_once(store: SQLiteEventStore, calls: list[Any]) -> list[Any]:
    """Hold the writer, queue ``calls`` (coroutines) behind it in order, then let it take them in one group."""
    inside, gate = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        inside.set()
        gate.wait(30)

    holding = asyncio.ensure_future(store.run_in_transaction(hold))
    assert await asyncio.to_thread(inside.wait, 30)
    pending = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # each runs to its hand-off to the writer
    gate.set()
    await holding
    return await asyncio.gather(*pending, return_exceptions=True)


async def test_a_group_takes_savepoints_only_when_one_of_its_appends_fails(tmp_path: Path) -> None:
    """Group commit runs a group's appends without savepoints; when one of them fails, the whole group is
    rolled back and run again, each append in a savepoint of its own, so only that one fails."""
    async with SQLiteEventStore(tmp_path / "savepoints.db", inline_writes=False) as store:
        await store.append("taken-1", new(1), NO_STREAM)
        writer = store._workers._writer
        assert writer is not None
        statements: list[str] = []
        writer.set_trace_callback(statements.append)
        fine = await held_then_all_at_once(store, [store.append(f"fine-{i}", new(1), NO_STREAM) for i in range(40)])
        assert [placed(r) for r in fine] == [(0, 2 + i, (2 + i,)) for i in range(40)]
        assert statements.count("COMMIT") == 2  # the held transaction, then the 40 appends together
        assert [s for s in statements if "SAVEPOINT" in s or s.startswith(("RELEASE", "ROLLBACK"))] == []

        statements.clear()
        mixed = await held_then_all_at_once(
            store, [store.append("taken-1" if i == 20 else f"mixed-{i}", new(1), NO_STREAM) for i in range(40)]
        )
        writer.set_trace_callback(None)
    [refused] = [r for r in mixed if not isinstance(r, AppendResult)]
    assert isinstance(refused, WrongExpectedVersion) and (refused.stream, refused.actual) == ("taken-1", 0)
    assert mixed.index(refused) == 20
    positions = [r.position for r in mixed if isinstance(r, AppendResult)]
    assert positions == list(range(42, 81))  # dense: nothing of the first run of the group stayed
    assert statements.count("ROLLBACK") == 1  # the failing group's first run
    assert statements.count("ROLLBACK TO append") == 1  # then only the failing append's savepoint
    assert statements.count("SAVEPOINT append") == statements.count("RELEASE append") == 40
