"""Property-based tests of every store entry with hostile input (guarantees 8, 11, 13).

Each test opens one store (one case per backend, through ``store_url``) and reuses it across the
examples hypothesis draws, with a distinct stream per example. Only ``EpochError``s may come out, a
refused call stores nothing, and what is accepted round-trips exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import EventStore, NewEvent, open_store
from epoch.errors import (
    EpochError,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidStreamName,
    InvalidVersion,
    WrongExpectedVersion,
)
from epoch.stores._checks import MAX_METADATA_DEPTH
from epoch.testing import collect
from tests.hostile import bad_numbers, categories_arg, hostile_json, hostile_names, is_valid_name

T = TypeVar("T")


def _close_the_loop_left_set() -> None:
    """Close the loop pytest-asyncio (before 1.4) leaves set and open after an async test
    (pytest-asyncio#724): the runner replaces it as the current loop, and once collected it would
    report ``ResourceWarning: unclosed event loop`` in whichever test runs then."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            left = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # none set (a runner already cleared it)
            return
    if not left.is_running() and not left.is_closed():
        left.close()


class Opened:
    """One store on a private event loop, shared by a test's examples."""

    def __init__(self, url: str) -> None:
        _close_the_loop_left_set()
        self.runner = asyncio.Runner()
        self.store: EventStore = self.runner.run(self._open(url))
        self.counter = itertools.count()

    @staticmethod
    async def _open(url: str) -> EventStore:
        return await open_store(url)

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coroutine

        return self.runner.run(wrapped())

    def stream(self, prefix: str = "fuzz") -> str:
        return f"{prefix}-{next(self.counter)}"

    def close(self) -> None:
        self.runner.run(self.store.close())
        self.runner.close()


@pytest.fixture
def opened(store_url: str) -> Iterator[Opened]:
    handle = Opened(store_url)
    yield handle
    handle.close()


# -- hostile metadata -------------------------------------------------------------------------------


def _valid_metadata(raw: bytes) -> bool:
    """The reference rule: a UTF-8 JSON object, nesting at most MAX_METADATA_DEPTH levels."""
    import json

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if text.startswith("\ufeff"):
        return False
    try:
        value = json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except (ValueError, RecursionError):  # nested past Python's own limit: far past epoch's too
        return False

    def depth(node: Any) -> int:
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        return 0

    def finite(node: Any) -> bool:  # 1e999 parses as inf in Python, not in a strict JSON reader
        if isinstance(node, float):
            return node not in (float("inf"), float("-inf"))
        if isinstance(node, dict):
            return all(finite(v) and "\ud800" not in k for k, v in node.items())
        if isinstance(node, list):
            return all(finite(v) for v in node)
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return False
        return True

    try:
        return isinstance(value, dict) and depth(value) <= MAX_METADATA_DEPTH and finite(value)
    except RecursionError:  # deeper than Python recurses: far deeper than the limit
        return False


@given(metadata=hostile_json)
def test_hostile_metadata_is_refused_or_round_trips(opened: Opened, metadata: bytes) -> None:
    store = opened.store
    stream = opened.stream()
    good = NewEvent("Ok", b"{}", b'{"who": "test"}')
    head = opened.run(store.head_position())
    try:
        result = opened.run(store.append(stream, [good, NewEvent("Fuzzed", b"{}", metadata)]))
    except InvalidEvent as exc:
        assert (exc.stream, exc.index) == (stream, 1)
        assert str(exc).startswith(f"{stream}: invalid event at index 1: metadata ")
        assert not _valid_metadata(metadata), f"refused valid metadata {metadata[:60]!r}: {exc}"
        assert opened.run(store.stream_version(stream)) is None
        assert opened.run(store.head_position()) == head
        return
    assert _valid_metadata(metadata) or metadata == b"", f"accepted {metadata[:60]!r}"
    assert result.version == 1
    recorded = opened.run(collect(store.read_stream(stream)))
    assert [r.metadata for r in recorded] == [good.metadata, metadata]  # byte for byte


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (b'{"a":' * 65 + b"1" + b"}" * 65, f"metadata nests deeper than {MAX_METADATA_DEPTH} levels"),
        (b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels"),
        (b'{"a": "\xff\xfe"}', "metadata must be a UTF-8 JSON object: invalid UTF-8 at byte 7"),
        (b'{"a": "\xed\xa0\x80"}', "metadata must be a UTF-8 JSON object: invalid UTF-8 at byte 7"),
        (b'{"a": NaN}', "metadata must be a UTF-8 JSON object: JSON is malformed: invalid character (byte 6)"),
        (b"[1, 2]", "metadata must be a UTF-8 JSON object: Expected `object`, got `array`"),
    ],
)
async def test_hostile_metadata_message(store: EventStore, metadata: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        await store.append("meta-1", [NewEvent("Ok", b"{}"), NewEvent("Bad", b"{}", metadata)])
    assert str(info.value) == f"meta-1: invalid event at index 1: {reason}"
    assert (info.value.stream, info.value.index, info.value.reason) == ("meta-1", 1, reason)
    assert await store.head_position() == 0


async def test_metadata_at_the_nesting_limit_round_trips(store: EventStore) -> None:
    deep = b'{"a":' * MAX_METADATA_DEPTH + b"1" + b"}" * MAX_METADATA_DEPTH
    tricky = b'{"s": "' + b"[" * 500 + b'\\"{{{"}'  # brackets inside a string do not nest
    await store.append("meta-1", [NewEvent("Deep", b"", deep), NewEvent("Tricky", b"", tricky)])
    assert [r.metadata for r in await collect(store.read_stream("meta-1"))] == [deep, tricky]


# -- hostile stream and type names ------------------------------------------------------------------


@given(name=hostile_names)
def test_hostile_stream_names(opened: Opened, name: str) -> None:
    store = opened.store
    event = NewEvent("Named", b"{}")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.append(name, [event]),
        lambda: collect(store.read_stream(name)),
        lambda: store.stream_version(name),
        lambda: store.delete_stream(name, 0),
        lambda: store.get_event(event.id, stream=name),
    ]
    if not is_valid_name(name):
        head = opened.run(store.head_position())
        for call in calls:
            with pytest.raises(InvalidStreamName) as info:
                opened.run(call())
            assert info.value.stream == name
        assert opened.run(store.head_position()) == head
        return
    result = opened.run(store.append(name, [event]))  # (a name may repeat across examples)
    recorded = opened.run(collect(store.read_stream(name, from_version=result.version)))
    assert [(r.stream, r.id) for r in recorded] == [(name, event.id)]
    assert opened.run(store.stream_version(name)) == result.version
    found = opened.run(store.get_event(event.id, stream=name))
    assert found is not None and found.stream == name
    opened.run(store.delete_stream(name, result.version))
    assert opened.run(store.stream_version(name)) is None


@given(type_name=hostile_names)
def test_hostile_event_type_names(opened: Opened, type_name: str) -> None:
    store = opened.store
    stream = opened.stream()
    try:
        opened.run(store.append(stream, [NewEvent("Ok", b"{}"), NewEvent(type_name, b"{}")]))
    except InvalidEvent as exc:
        assert (exc.stream, exc.index) == (stream, 1)
        assert not is_valid_name(type_name, 256), f"refused a valid type name {type_name!r}"
        assert opened.run(store.stream_version(stream)) is None
        return
    assert is_valid_name(type_name, 256), f"accepted {type_name!r}"
    assert [r.type for r in opened.run(collect(store.read_stream(stream)))] == ["Ok", type_name]


# -- numbers ----------------------------------------------------------------------------------------


_ENTRIES = ["append", "delete_stream", "read_stream.from_version", "read_stream.backwards", "read_stream.limit"]
_ENTRIES += ["read_all.after", "read_all.limit", "subscribe.after"]


async def _call(store: EventStore, entry: str, stream: str, number: Any) -> object:
    if entry == "append":
        return await store.append(stream, [NewEvent("N", b"{}")], number)
    if entry == "delete_stream":
        await store.delete_stream(stream, number)
        return None
    if entry == "read_stream.from_version":
        return await collect(store.read_stream(stream, from_version=number))
    if entry == "read_stream.backwards":
        return await collect(store.read_stream(stream, from_version=number, backwards=True))
    if entry == "read_stream.limit":
        return await collect(store.read_stream(stream, limit=number))
    if entry == "read_all.after":
        return await collect(store.read_all(after=number, limit=5))
    if entry == "read_all.limit":
        return await collect(store.read_all(limit=number))
    subscription = store.subscribe(after=number)
    try:
        return await asyncio.wait_for(anext(subscription), 0.2)
    except TimeoutError:
        return None  # past the end: it waits (not an error, not a loop)
    finally:
        await subscription.aclose()  # type: ignore[attr-defined]


@given(entry=st.sampled_from(_ENTRIES), number=bad_numbers)
def test_bad_numbers_on_every_entry(opened: Opened, entry: str, number: Any) -> None:
    store = opened.store
    stream = opened.stream()
    opened.run(store.append(stream, [NewEvent("Seed", b"{}")]))
    head = opened.run(store.head_position())
    try:
        opened.run(_call(store, entry, stream, number))
    except (InvalidExpectedVersion, InvalidVersion, WrongExpectedVersion) as exc:
        if isinstance(exc, WrongExpectedVersion):
            assert (exc.stream, exc.expected, exc.actual) == (stream, number, 0)
    except EpochError as exc:  # pragma: no cover - a failure, with the error shown
        raise AssertionError(f"{entry}({number!r}) raised {type(exc).__name__}: {exc}") from exc
    # Refused, a guard that cannot match, or a bound past the end: nothing is written or deleted.
    assert opened.run(store.head_position()) == head
    assert opened.run(store.stream_version(stream)) == 0


# -- categories -------------------------------------------------------------------------------------


@given(categories=categories_arg)
def test_categories_filter_delivers_each_matching_event_once(opened: Opened, categories: Any) -> None:
    store = opened.store
    tag = next(opened.counter)
    for stream in ("users-1", "orders-1", "a", "x-1", "users-2"):
        opened.run(store.append(stream, [NewEvent("T", b'{"tag": %d}' % tag)]))
    names = {categories} if isinstance(categories, str) else set(categories)
    everything = opened.run(collect(store.read_all()))
    wanted = [e.position for e in everything if e.stream.split("-")[0] in names]
    read = opened.run(collect(store.read_all(categories=categories)))
    assert [e.position for e in read] == wanted

    async def subscribed() -> list[int]:
        # Take what matches, then append a marker in a filtered category and read up to it: a second
        # copy of any event would arrive before the marker.
        seen: list[int] = []
        subscription = store.subscribe(categories=categories)
        try:
            while len(seen) < len(wanted):
                seen.append((await asyncio.wait_for(anext(subscription), 10)).position)
            if not names:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(anext(subscription), 0.05)
                return seen
            marker = await store.append(f"{sorted(names)[0]}-marker", [NewEvent("Marker", b"{}")])
            while (event := await asyncio.wait_for(anext(subscription), 10)).position != marker.position:
                seen.append(event.position)
        finally:
            await subscription.aclose()  # type: ignore[attr-defined]
        return seen

    assert opened.run(subscribed()) == wanted
