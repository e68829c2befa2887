"""The confirmed read (``epoch.stores.confirmed_read_of``): a cached ``CommandHandler``'s fold, which reads
nothing once the stream no longer starts where the cached state was folded from; one statement on
PostgreSQL (issue 11), two reads elsewhere. Every store, and hostile arguments on every store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import CommandHandler, EventStore, NewEvent
from epoch.errors import EpochError, InvalidStreamName, InvalidVersion
from epoch.stores import confirmed_read_of
from epoch.stores.postgres import PostgresEventStore
from epoch.stores.postgres import sql as q
from epoch.testing import collect
from tests.hostile import bad_numbers, hostile_names, huge_ints, is_valid_name
from tests.test_commands_lifecycle import Add, codec, handler_on, tally
from tests.test_fuzz_stores import Opened, opened

__all__ = ["opened"]


def events(n: int) -> list[NewEvent]:
    return [NewEvent("Added", b'{"n":%d}' % i) for i in range(n)]


async def versions(store: EventStore, stream: str, from_version: int, first_version: int) -> list[int]:
    return [e.version for e in await collect(confirmed_read_of(store)(stream, from_version, first_version))]


async def test_reads_on_while_the_stream_starts_at_or_before_first_version(store: EventStore) -> None:
    await store.append("tally-1", events(5))
    assert await versions(store, "tally-1", 2, 0) == [2, 3, 4]
    assert await versions(store, "tally-1", 0, 7) == [0, 1, 2, 3, 4]
    assert await versions(store, "tally-1", 5, 0) == []  # past the end
    assert await versions(store, "tally-1", 2**80, 2**80) == []  # beyond 64 bits: past every version
    await store.truncate_before("tally-1", 3)
    assert await versions(store, "tally-1", 3, 3) == [3, 4]
    assert await versions(store, "tally-1", 4, 2**70) == [4]


async def test_reads_nothing_once_the_start_moved_past_first_version(store: EventStore) -> None:
    await store.append("tally-1", events(5))
    await store.truncate_before("tally-1", 3)
    assert await versions(store, "tally-1", 3, 2) == []  # version 3 is still there: the start moved all the same
    await store.set_stream_limits("tally-1", max_count=1)
    assert await versions(store, "tally-1", 4, 3) == []
    assert await versions(store, "tally-1", 4, 4) == [4]
    assert await versions(store, "tally-2", 0, 0) == []  # never written
    await store.append("tally-3", events(2))
    await store.delete_stream("tally-3")
    assert await versions(store, "tally-3", 0, 5) == []  # soft-deleted
    await store.append("tally-4", events(2))
    await store.delete_stream("tally-4", hard=True)
    assert await versions(store, "tally-4", 0, 5) == []  # a tombstone reads as nothing, never raises


@pytest.mark.parametrize(
    ("stream", "from_version", "first_version", "error", "message"),
    [
        ("", 0, 0, InvalidStreamName, "invalid stream name '': must have 1 to 512 characters, not 0"),
        ("tally-1", -1, 0, InvalidVersion, "tally-1: invalid version -1"),
        ("tally-1", 0, True, InvalidVersion, "tally-1: invalid version True"),
        ("tally-1", 0, "0", InvalidVersion, "tally-1: invalid version '0'"),
    ],
)
async def test_bad_arguments_are_refused_before_the_store_is_read(
    store: EventStore, stream: str, from_version: Any, first_version: Any, error: type[Exception], message: str
) -> None:
    await store.append("tally-1", events(2))
    with pytest.raises(error) as info:
        await versions(store, stream, from_version, first_version)
    assert str(info.value) == message
    assert [e.version for e in await collect(store.read_stream("tally-1"))] == [0, 1]  # nothing changed


async def test_a_cached_handler_sees_the_truncation_of_another_writer(store: EventStore) -> None:
    handler = handler_on(store)
    for n in (1, 2, 3):
        await handler.execute(1, Add(n))
    assert (await handler.load(1)).state == (1, 2, 3)
    await store.truncate_before("tally-1", 1)  # version 0 is gone: the cached state was folded on it
    loaded = await handler.load(1)
    assert (loaded.state, loaded.version) == ((2, 3), 2)


# -- PostgreSQL: statements ------------------------------------------------------------------------


class Statements:
    """Every statement the process sends on psycopg's asyncio connections (what the store uses)."""

    def __init__(self) -> None:
        self.sent: list[str] = []


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    seen = Statements()
    execute = psycopg.AsyncCursor.execute

    async def counted(self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.sent.append(str(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)
    return seen


@pytest.fixture
async def pg_store(pg_dsn: str) -> Any:
    store = PostgresEventStore(pg_dsn)
    await store.open()
    yield store
    await store.close()


async def test_a_cached_postgres_load_is_one_statement(pg_store: PostgresEventStore, statements: Statements) -> None:
    handler = handler_on(pg_store)
    await handler.execute(1, Add(1))
    await handler.execute(1, Add(2))
    await handler.load(1)  # cached now
    statements.sent.clear()
    loaded = await handler.load(1)
    assert (loaded.state, loaded.version) == ((1, 2), 1)
    assert statements.sent == [q.READ_STREAM_CONFIRMED]


async def test_a_cached_postgres_load_behind_another_writer_is_one_statement(
    pg_store: PostgresEventStore, pg_dsn: str, statements: Statements
) -> None:
    handler = handler_on(pg_store)
    await handler.execute(1, Add(1))
    async with PostgresEventStore(pg_dsn) as other:
        await handler_on(other, cache=None).execute(1, Add(2))
    statements.sent.clear()
    loaded = await handler.load(1)
    assert (loaded.state, loaded.version) == ((1, 2), 1)
    assert statements.sent == [q.READ_STREAM_CONFIRMED]


async def test_a_cached_postgres_load_after_a_truncation_folds_anew(
    pg_store: PostgresEventStore, statements: Statements
) -> None:
    handler = handler_on(pg_store)
    for n in (1, 2, 3):
        await handler.execute(1, Add(n))
    await pg_store.truncate_before("tally-1", 2)
    statements.sent.clear()
    loaded = await handler.load(1)
    assert (loaded.state, loaded.version) == ((3,), 2)
    assert statements.sent == [q.READ_STREAM_CONFIRMED, q.READ_STREAM_FORWARD]  # the check read nothing


async def test_an_uncached_postgres_command_is_two_statements(
    pg_store: PostgresEventStore, statements: Statements
) -> None:
    handler = CommandHandler(pg_store, tally, "tally", codec, cache=None)
    await handler.execute(1, Add(1))
    statements.sent.clear()
    await handler.execute(1, Add(2))
    assert statements.sent == [q.READ_STREAM_FORWARD, q.APPEND_ONE_GUARDED]  # the check rides on the append


async def test_a_cached_postgres_command_is_one_statement(pg_store: PostgresEventStore, statements: Statements) -> None:
    handler = handler_on(pg_store)
    await handler.execute(1, Add(1))
    statements.sent.clear()
    await handler.execute(1, Add(2))
    assert statements.sent == [q.APPEND_ONE_GUARDED]


async def test_a_confirmed_read_of_many_pages_checks_only_the_first(
    pg_store: PostgresEventStore, statements: Statements
) -> None:
    await pg_store.append("tally-1", events(2500))
    await pg_store.set_stream_limits("tally-1", max_age=timedelta(days=1))
    statements.sent.clear()
    assert await versions(pg_store, "tally-1", 10, 0) == list(range(10, 2500))
    assert statements.sent == [q.READ_STREAM_CONFIRMED, q.READ_STREAM_FORWARD, q.READ_STREAM_FORWARD]


# -- hostile arguments -----------------------------------------------------------------------------


def good_number(number: object) -> bool:
    return isinstance(number, int) and not isinstance(number, bool) and number >= 0


@given(
    name=hostile_names,
    from_version=st.one_of(bad_numbers, st.integers(0, 3)),
    first=st.one_of(bad_numbers, huge_ints, st.integers(0, 3)),
)
def test_hostile_arguments_of_a_confirmed_read(opened: Opened, name: str, from_version: Any, first: Any) -> None:
    stream = opened.stream()
    opened.run(opened.store.append(stream, events(3)))
    head = opened.run(opened.store.head_position())
    read = confirmed_read_of(opened.store)
    for target in (name, stream):
        try:
            found = [e.version for e in opened.run(collect(read(target, from_version, first)))]
        except InvalidStreamName as exc:
            assert not is_valid_name(target) or target.startswith("$"), exc
            continue
        except InvalidVersion as exc:
            bad = from_version if not good_number(from_version) else first
            assert not good_number(bad)
            assert str(exc) == f"{target}: invalid version {bad!r}"
            continue
        except EpochError as exc:  # pragma: no cover - a failure, with the error shown
            raise AssertionError(f"{target!r}, {from_version!r}, {first!r} raised {type(exc).__name__}: {exc}") from exc
        assert good_number(from_version) and good_number(first)
        if target == stream:
            assert found == [v for v in range(3) if v >= from_version]
        else:
            assert found == []  # a stream of nothing (a name the store accepts, never written)
    assert opened.run(opened.store.head_position()) == head  # a read stores nothing
