"""SQLite stream reads across page boundaries against a model: a first page of ``INLINE_ROWS`` events,
then pages of ``PAGE_SIZE``, all on the caller's thread, must yield exactly the versions a plain list
gives, for streams whose lengths sit on either side of every boundary, forwards and backwards, from
any version (also past 64 bits) and with any limit; events appended to the stream while a read is
between two pages are not in it (its first page fixed the bounds); and the first page honours the
stream's start (truncation, ``max_count``, a soft delete), which the same statement reads."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epoch.stores.sqlite import SQLiteEventStore
from epoch.stores.sqlite.threads import INLINE_ROWS, PAGE_SIZE
from epoch.testing import new_events as new
from tests.test_sqlite_long_reads import fill_stream

# Each length one below, at and one above a boundary of the paging (first page, then full pages).
BOUNDARIES = [INLINE_ROWS, INLINE_ROWS + PAGE_SIZE, INLINE_ROWS + 2 * PAGE_SIZE]
LENGTHS = sorted({0, 1, *(b + d for b in BOUNDARIES for d in (-1, 0, 1))})
GROWING = "grow-1"  # the stream appended to in the middle of reads


def _run(coro: object) -> object:
    loop = asyncio.new_event_loop()  # a loop of its own per example (asyncio.run would unset the test's)
    try:
        return loop.run_until_complete(coro)  # type: ignore[arg-type]
    finally:
        loop.close()


@pytest.fixture(scope="module")
def filled() -> Iterator[tuple[Path, dict[str, int]]]:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "paging.db"
        lengths = {f"len-{n}": n for n in LENGTHS} | {GROWING: INLINE_ROWS + PAGE_SIZE + 7}

        async def fill() -> None:
            async with SQLiteEventStore(path) as store:
                for stream, n in lengths.items():
                    await fill_stream(store, stream, n)

        _run(fill())
        yield path, lengths


def expected(length: int, from_version: int | None, backwards: bool, limit: int | None) -> list[int]:
    if backwards:
        top = length - 1 if from_version is None else min(from_version, length - 1)
        versions = list(range(top, -1, -1))
    else:
        versions = list(range(from_version or 0, length))
    return versions if limit is None else versions[:limit]


around = st.sampled_from([0, 1, *(b + d for b in BOUNDARIES for d in (-2, -1, 0, 1, 2))])
from_versions = st.one_of(st.none(), around, st.integers(0, 2_500), st.just(2**63 - 1), st.just(2**63), st.just(2**100))
limits = st.one_of(st.none(), around, st.integers(0, 2_500), st.just(2**63), st.just(2**100))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(LENGTHS), from_versions, st.booleans(), limits)
def test_a_read_yields_the_models_versions_across_every_page_boundary(
    filled: tuple[Path, dict[str, int]], length: int, from_version: int | None, backwards: bool, limit: int | None
) -> None:
    path, _ = filled

    async def read() -> list[int]:
        async with SQLiteEventStore(path) as store:
            stream = store.read_stream(f"len-{length}", from_version=from_version, backwards=backwards, limit=limit)
            return [e.version async for e in stream]

    assert _run(read()) == expected(length, from_version, backwards, limit)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, INLINE_ROWS + PAGE_SIZE + 5), st.integers(1, 3), st.booleans())
def test_events_appended_between_two_pages_are_not_in_the_read(
    filled: tuple[Path, dict[str, int]], consumed: int, appended: int, backwards: bool
) -> None:
    path, lengths = filled
    length = lengths[GROWING]

    async def read() -> list[int]:
        async with SQLiteEventStore(path) as store:
            stream = store.read_stream(GROWING, backwards=backwards)
            versions = [(await anext(stream)).version for _ in range(min(consumed, length))]
            await store.append(GROWING, new(appended), length - 1)  # in the middle of the read
            return versions + [e.version async for e in stream]

    got = _run(read())
    lengths[GROWING] = length + appended
    assert got == expected(length, None, backwards, None)


_names = iter(range(10**9))


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.integers(0, INLINE_ROWS + 30),
    st.one_of(st.none(), st.integers(0, INLINE_ROWS + 40)),
    st.one_of(st.none(), st.integers(1, INLINE_ROWS + 40)),
    st.booleans(),
    from_versions,
    st.booleans(),
    limits,
)
def test_the_first_page_honours_the_streams_start_against_the_model(
    filled: tuple[Path, dict[str, int]],
    length: int,
    truncated: int | None,
    max_count: int | None,
    deleted: bool,
    from_version: int | None,
    backwards: bool,
    limit: int | None,
) -> None:
    """The first page fixes the read's bounds in the statement that reads it (``STREAM_FIRST_PAGE``):
    truncation, ``max_count`` and a soft delete move the first version a read may return."""
    path, _ = filled
    stream = f"start-{next(_names)}"

    async def read() -> list[int]:
        async with SQLiteEventStore(path) as store:
            if length:
                await fill_stream(store, stream, length)
            if truncated is not None and length:
                await store.truncate_before(stream, truncated)
            if max_count is not None and length:
                await store.set_stream_limits(stream, max_count=max_count)
            if deleted and length:
                await store.delete_stream(stream)
            events = store.read_stream(stream, from_version=from_version, backwards=backwards, limit=limit)
            return [e.version async for e in events]

    first = 0
    if length:
        first = max(truncated or 0, length - max_count if max_count is not None else 0, length if deleted else 0)
    model = [v for v in expected(length, from_version, backwards, None) if v >= first]
    assert _run(read()) == (model if limit is None else model[:limit])
