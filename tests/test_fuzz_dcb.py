"""Property-based tests of the consistency-boundary entries with hostile input (DESIGN §8, guarantees 8, 13).

Tags, query names, ``after``/``limit`` and append conditions drawn from ``tests.hostile``, on every store
(``store_url``): only ``EpochError``s come out, a refused call stores nothing, and what is accepted
round-trips and is found by its tags. A store that does not declare an operation raises ``NotSupported``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import ANY, NO_STREAM, NewEvent
from epoch.errors import (
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidQuery,
    InvalidStreamName,
    InvalidVersion,
    NotSupported,
    WrongExpectedVersion,
)
from epoch.queries import AppendCondition, Query, QueryItem
from epoch.testing import collect
from epoch.testing.contract_dcb import serves
from tests.hostile import any_text, bad_numbers, hostile_names, huge_ints, is_valid_name, valid_names
from tests.test_fuzz_stores import Opened


@pytest.fixture
def opened(store_url: str) -> Iterator[Opened]:
    handle = Opened(store_url)
    yield handle
    handle.close()


tag_lists = st.lists(st.one_of(hostile_names, valid_names, any_text), max_size=6)


@given(tags=tag_lists)
def test_hostile_tags_round_trip_or_are_refused(opened: Opened, tags: list[str]) -> None:
    store, stream = opened.store, opened.stream()
    head = opened.run(store.head_position())
    event = NewEvent("T", b"{}", tags=tuple(tags))
    if not all(is_valid_name(tag, 256) for tag in tags):
        with pytest.raises(InvalidEvent) as info:
            opened.run(store.append(stream, [event]))
        assert (info.value.stream, info.value.index) == (stream, 0)
        assert opened.run(store.head_position()) == head
        return
    result = opened.run(store.append(stream, [event]))
    expected = tuple(dict.fromkeys(tags))
    [stored] = opened.run(collect(store.read_stream(stream)))
    assert stored.tags == expected
    if not serves(store, "read_query"):
        return
    for tag in expected:
        found = opened.run(collect(store.read_query(Query([QueryItem(tags=(tag,))]), after=head)))
        assert [e.position for e in found] == [result.position], tag
    everything = opened.run(collect(store.read_query(Query([QueryItem(tags=expected)]), after=head)))
    assert [e.id for e in everything] == [event.id]  # every tag of the item (none: the item matches all)


@given(names=st.lists(st.one_of(hostile_names, any_text), min_size=1, max_size=4), as_types=st.booleans())
def test_hostile_query_names(opened: Opened, names: list[str], as_types: bool) -> None:
    valid = all(is_valid_name(name, 256) for name in names)
    try:
        item = QueryItem(types=tuple(names)) if as_types else QueryItem(tags=tuple(names))
    except InvalidQuery:
        assert not valid
        return
    assert valid
    store = opened.store
    if not serves(store, "read_query"):
        with pytest.raises(NotSupported):
            opened.run(collect(store.read_query(Query([item]))))
        return
    head = opened.run(store.head_position())
    found = opened.run(collect(store.read_query(Query([item]), after=head)))
    assert found == []  # nothing written after ``head`` carries these names
    for event in opened.run(collect(store.read_query(Query([item])))):
        assert item.matches(event.type, event.tags)


@given(after=st.one_of(bad_numbers, huge_ints, st.integers(0, 50)), limit=st.one_of(st.none(), bad_numbers))
def test_hostile_read_query_bounds(opened: Opened, after: Any, limit: Any) -> None:
    store = opened.store
    good_after = isinstance(after, int) and not isinstance(after, bool) and after >= 0
    good_limit = limit is None or (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0)
    try:
        found = opened.run(collect(store.read_query(Query.all(), after=after, limit=limit)))
    except InvalidVersion as exc:
        assert not (good_after and good_limit)
        assert exc.stream == "$query"
        return
    except NotSupported:
        assert good_after and good_limit and not serves(store, "read_query")
        return
    assert good_after and good_limit
    assert all(e.position > after for e in found)


@given(after=st.one_of(bad_numbers, huge_ints, st.none()))
def test_hostile_condition_after(opened: Opened, after: Any) -> None:
    store, stream = opened.store, opened.stream()
    head = opened.run(store.head_position())
    good = after is None or (isinstance(after, int) and not isinstance(after, bool) and after >= 0)
    try:
        condition = AppendCondition(Query([QueryItem(tags=("never-used",))]), after=after)
    except InvalidQuery as exc:
        assert not good
        assert str(exc) == f"after must be None or a position >= 0, not {after!r}"
        return
    assert good
    try:
        result = opened.run(store.append_with_condition(stream, [NewEvent("T", b"{}")], condition))
    except NotSupported:
        assert not serves(store, "append_with_condition")
        assert opened.run(store.head_position()) == head
        return
    assert result.version == 0


@given(streams=st.lists(st.one_of(hostile_names, valid_names), min_size=1, max_size=3))
def test_hostile_append_many_streams(opened: Opened, streams: list[str]) -> None:
    store = opened.store
    head = opened.run(store.head_position())
    unique = [f"{name}-{opened.stream()}" if is_valid_name(f"{name}-x") else name for name in streams]
    entries = [(name, [NewEvent("T", b"{}")], ANY) for name in unique]
    try:
        results = opened.run(store.append_many(entries))
    except (InvalidStreamName, InvalidEvent) as exc:
        assert not all(is_valid_name(name) for name in unique) or len(set(unique)) < len(unique)
        assert opened.run(store.head_position()) == head, exc
        return
    except NotSupported:
        assert not serves(store, "append_many")
        return
    assert [r.stream for r in results] == unique and all(r.version is not None for r in results)


@given(stream=st.one_of(hostile_names, valid_names), expected=st.one_of(bad_numbers, st.none()))
def test_hostile_condition_stream_and_guard(opened: Opened, stream: str, expected: Any) -> None:
    store = opened.store
    head = opened.run(store.head_position())
    condition = AppendCondition(Query([QueryItem(tags=("never-used",))]))
    try:
        result = opened.run(store.append_with_condition(stream, [NewEvent("T", b"{}")], condition, expected))
    except InvalidStreamName:
        assert not is_valid_name(stream)
    except InvalidExpectedVersion as exc:
        assert is_valid_name(stream) and exc.stream == stream
    except WrongExpectedVersion as exc:  # a huge version, or None for a stream an example wrote before
        assert exc.stream == stream and exc.expected == (NO_STREAM if expected is None else expected)
    except NotSupported:
        assert not serves(store, "append_with_condition")
    else:
        assert expected is None and result.stream == stream
        return
    assert opened.run(store.head_position()) == head
