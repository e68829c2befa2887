"""Hostile input to CommandHandler on every store: only EpochErrors (or the decider's own) come out, and a
refused command stores nothing. Examples per test come from the hypothesis profile (tests/hostile.py)."""

from __future__ import annotations

import itertools
import math
from typing import Any
from uuid import UUID

from hypothesis import example, given
from hypothesis import strategies as st

from epoch import (
    EpochError,
    EventStore,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidStreamName,
    InvalidVersion,
    WrongExpectedVersion,
)
from tests.hostile import any_text, bad_numbers, hostile_names, huge_ints, is_valid_name
from tests.test_commands import Account, Deposit, Open, handler_for

_fresh = itertools.count()


def fresh_id() -> str:
    return f"f{next(_fresh)}"


async def run(coro: Any) -> Any:
    try:
        return await coro
    except EpochError as exc:
        return exc


@given(id=hostile_names)
async def test_entity_ids(store: EventStore, id: str) -> None:
    handler = handler_for(store, cache=None)
    head = await store.head_position()
    outcome = await run(handler.execute(id, Open("ada")))
    if is_valid_name(f"account-{id}"):
        assert not isinstance(outcome, Exception), outcome
        assert outcome.stream == f"account-{id}"
        assert (await handler.load(id)).state == Account("ada")
    else:
        assert isinstance(outcome, InvalidStreamName), outcome
        assert await store.head_position() == head


@given(expected=st.one_of(bad_numbers, huge_ints))
async def test_expected_versions(store: EventStore, expected: Any) -> None:
    handler = handler_for(store)
    id = fresh_id()
    await handler.execute(id, Open("ada"))
    head = await store.head_position()
    outcome = await run(handler.execute(id, Deposit(1), expected))
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        assert isinstance(outcome, WrongExpectedVersion), outcome
        assert (outcome.stream, outcome.expected, outcome.actual) == (f"account-{id}", expected, 0)
    else:
        assert isinstance(outcome, InvalidExpectedVersion), outcome
        assert outcome.stream == f"account-{id}"
    assert await store.head_position() == head


@given(command_id=st.one_of(any_text, st.uuids()), correlation=st.one_of(st.none(), any_text))
@example(command_id="\ud800", correlation=None)
@example(command_id="ok", correlation="\udc00")
async def test_command_and_correlation_ids(store: EventStore, command_id: str | UUID, correlation: str | None) -> None:
    handler = handler_for(store)
    id = fresh_id()
    await handler.execute(id, Open("ada"))
    head = await store.head_position()
    first = await run(handler.execute(id, Deposit(1), command_id=command_id, correlation_id=correlation))
    bad = next((t for t in (command_id, correlation) if isinstance(t, str) and not _encodes(t)), None)
    if bad is not None:  # only text that UTF-8 cannot carry (a lone surrogate) is refused
        assert isinstance(first, InvalidEvent), first
        name = "command_id" if bad is command_id else "correlation_id"
        assert str(first) == f"account-{id}: invalid event at index 0: {name} {bad!r} contains a lone surrogate"
        assert await store.head_position() == head
        return
    assert not isinstance(first, Exception), first
    again = await handler.execute(id, Deposit(1), command_id=command_id, correlation_id=correlation)
    assert (again.version, again.position) == (first.version, first.position) == (1, first.position)
    assert first.events[0].metadata["$command_id"] == str(command_id)
    assert (await handler.load(id)).state == Account("ada", 1, 1)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**100), max_value=2**100),
        st.floats(allow_nan=True, allow_infinity=True),
        any_text,
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)


def _storable(value: Any) -> bool:
    """What JSON (and so the codec) can carry and read back equal: no NaN/inf, 64-bit ints, UTF-8 text."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):  # metadata decodes untyped: any int reads back equal
        return True
    if isinstance(value, str):
        return _encodes(value)
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return all(_storable(k) and _storable(v) for k, v in value.items())


@given(metadata=st.dictionaries(any_text, _json_values, max_size=4))
@example(metadata={"a": math.nan})
@example(metadata={"a": [1, {"b": -math.inf}]})
@example(metadata={"\ud800": 1})
@example(metadata={"a": "\udfff"})
@example(metadata={"a": 2**100})
async def test_metadata(store: EventStore, metadata: dict[str, Any]) -> None:
    handler = handler_for(store, cache=None)
    id = fresh_id()
    await handler.execute(id, Open("ada"))
    head = await store.head_position()
    outcome = await run(handler.execute(id, Deposit(1), metadata=metadata))
    if _storable(metadata):
        assert not isinstance(outcome, Exception), outcome
        [event] = [e async for e in store.read_stream(f"account-{id}", from_version=1)]
        expected = {k: v for k, v in metadata.items() if k not in ("$correlation_id", "$causation_id", "$command_id")}
        stored = handler.codec.decode(event).metadata
        assert {k: v for k, v in stored.items() if not k.startswith("$") or k in expected} == expected
    else:
        assert isinstance(outcome, InvalidEvent), outcome
        assert (outcome.stream, outcome.index) == (f"account-{id}", 0)
        assert await store.head_position() == head


@given(version=st.one_of(bad_numbers, huge_ints, st.integers(min_value=0, max_value=5)))
async def test_time_travel_versions(store: EventStore, version: Any) -> None:
    handler = handler_for(store)
    if await store.stream_version("account-tt") is None:
        await handler.execute("tt", Open("ada"))
        await handler.execute("tt", Deposit(1))
    outcome = await run(handler.state_at("tt", version=version))
    if isinstance(version, int) and not isinstance(version, bool) and 0 <= version <= 1:
        assert outcome == [Account("ada"), Account("ada", 1, 1)][version]
    else:
        assert isinstance(outcome, InvalidVersion), outcome
        assert (outcome.stream, outcome.requested, outcome.actual) == ("account-tt", version, 1)


@given(at=st.one_of(any_text, bad_numbers, st.datetimes()))
async def test_time_travel_instants(store: EventStore, at: Any) -> None:
    handler = handler_for(store)
    if await store.stream_version("account-tt") is None:
        await handler.execute("tt", Open("ada"))
    outcome = await run(handler.state_at("tt", at=at))
    assert isinstance(outcome, InvalidVersion), outcome  # none of these is an aware datetime
    assert (outcome.stream, outcome.actual) == ("account-tt", 0)
    assert outcome.requested is at or outcome.requested == at
