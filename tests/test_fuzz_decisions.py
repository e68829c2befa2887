"""Hostile input to DecisionHandler and the DCB examples on every store: only EpochErrors (or the
decider's own) come out, and a refused command stores nothing. Examples per test come from the
hypothesis profile (tests/hostile.py); SQL stores through tests/dcb_stores.py."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from epoch import EpochError, EventStore, InvalidEvent, InvalidQuery, InvalidStreamName, Query, QueryItem, open_store
from epoch.examples.users.domain import DuplicateName, UserError
from epoch.examples.users.unique_names import AlreadyRegistered, RegisterUser, UserRegistered, names_handler
from epoch.streams import MAX_TYPE_NAME
from tests.dcb_stores import DCB_BACKENDS, dcb_url
from tests.hostile import any_text, hostile_names, is_valid_name
from tests.test_fuzz_commands import _encodes, _json_values, _storable

_fresh = itertools.count()


@pytest.fixture(params=DCB_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return dcb_url(request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[EventStore]:
    async with open_store(url) as opened:
        yield opened


async def run(coro: Any) -> Any:
    try:
        return await coro
    except (EpochError, UserError) as exc:
        return exc


@given(user_id=hostile_names, name=hostile_names)
@example(user_id="1", name="ada ")
@example(user_id="1", name="\ud800")
@example(user_id="1", name="a" * (MAX_TYPE_NAME - len("username:")))
@example(user_id="1", name="a" * (MAX_TYPE_NAME - len("username:") + 1))
@example(user_id="a\x00", name="ada")
async def test_user_ids_and_names(store: EventStore, user_id: str, name: str) -> None:
    handler = names_handler(store)
    head = await store.head_position()
    outcome = await run(handler.execute(RegisterUser(user_id, name)))
    tags = (f"user:{user_id}", f"username:{name}")
    if not is_valid_name(f"user-{user_id}"):
        assert isinstance(outcome, InvalidStreamName), outcome
    elif not all(is_valid_name(tag, MAX_TYPE_NAME) for tag in tags):
        assert isinstance(outcome, InvalidQuery), outcome
    else:
        # An earlier example may have registered this user or this name: the rule holds all the same.
        mentions = Query([QueryItem(tags=(tag,)) for tag in tags])
        owners = [handler.codec.decode_data(r) async for r in store.read_query(mentions)]
        if isinstance(outcome, DuplicateName):
            assert any(e.name == name and e.user_id != user_id for e in owners), owners
        elif isinstance(outcome, AlreadyRegistered):
            assert any(e.user_id == user_id and e.name != name for e in owners), owners
        elif not outcome.events:
            assert UserRegistered(user_id, name) in owners
        else:
            assert not isinstance(outcome, Exception), outcome
            assert [(e.stream, e.data, e.tags) for e in outcome.events] == [
                (f"user-{user_id}", UserRegistered(user_id, name), tags)
            ]
            [stored] = [r async for r in store.read_stream(f"user-{user_id}")]
            assert (stored.tags, handler.codec.decode_data(stored)) == (tags, UserRegistered(user_id, name))
            again = await handler.execute(RegisterUser(user_id, name))
            assert (again.events, again.version, again.position) == ([], 0, stored.position)
        return
    assert await store.head_position() == head


@given(command_id=st.one_of(any_text, st.uuids()), correlation=st.one_of(st.none(), any_text))
@example(command_id="\ud800", correlation=None)
@example(command_id="ok", correlation="\udc00")
async def test_command_and_correlation_ids(store: EventStore, command_id: str | UUID, correlation: str | None) -> None:
    handler = names_handler(store)
    user = f"c{next(_fresh)}"
    head = await store.head_position()
    command = RegisterUser(user, user)
    first = await run(handler.execute(command, command_id=command_id, correlation_id=correlation))
    bad = next((t for t in (command_id, correlation) if isinstance(t, str) and not _encodes(t)), None)
    if bad is not None:
        assert isinstance(first, InvalidEvent), first
        name = "command_id" if bad is command_id else "correlation_id"
        assert str(first) == f"user-{user}: invalid event at index 0: {name} {bad!r} contains a lone surrogate"
        assert await store.head_position() == head
        return
    assert not isinstance(first, Exception), first
    again = await handler.execute(command, command_id=command_id, correlation_id=correlation)
    assert (again.version, again.position, again.state) == (first.version, first.position, first.state)
    assert [e.id for e in again.events] == [e.id for e in first.events]
    assert first.events[0].metadata["$command_id"] == str(command_id)
    assert await store.head_position() == first.position


@given(metadata=st.dictionaries(any_text, _json_values, max_size=4))
@example(metadata={"a": math.nan})
@example(metadata={"\ud800": 1})
@example(metadata={"a": 2**100})
async def test_metadata(store: EventStore, metadata: dict[str, Any]) -> None:
    handler = names_handler(store)
    user = f"m{next(_fresh)}"
    head = await store.head_position()
    outcome = await run(handler.execute(RegisterUser(user, user), metadata=metadata))
    if _storable(metadata):
        assert not isinstance(outcome, Exception), outcome
        [event] = [e async for e in store.read_stream(f"user-{user}")]
        expected = {k: v for k, v in metadata.items() if k not in ("$correlation_id", "$causation_id", "$command_id")}
        stored = handler.codec.decode(event).metadata
        assert {k: v for k, v in stored.items() if not k.startswith("$") or k in expected} == expected
    else:
        assert isinstance(outcome, InvalidEvent), outcome
        assert (outcome.stream, outcome.index) == (f"user-{user}", 0)
        assert await store.head_position() == head
