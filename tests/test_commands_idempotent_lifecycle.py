"""A command id after the stream's lifecycle moved on (docs/lifecycle.md, "Command ids after a lifecycle
operation"): a truncation, limits (before and after a scavenge), a soft delete and a tombstone, on every
store. While any event of the first execution is stored, a retry returns its result and decides nothing
again; once all of them are erased, no trace is left and the command runs again."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from epoch import (
    CommandHandler,
    Decider,
    DuplicateEventId,
    EventStore,
    ExecuteResult,
    ResultUnavailable,
    StreamDeleted,
)
from epoch.codec import Codec
from epoch.testing import collect

pytestmark = [pytest.mark.asyncio]


@dataclass(frozen=True)
class Add:
    """Count on by ``k``: one event per step."""

    k: int = 1


@dataclass(frozen=True)
class Added:
    n: int


def decide(command: Add, state: tuple[int, ...]) -> list[Added]:
    top = state[-1] if state else -1
    return [Added(top + 1 + i) for i in range(command.k)]


def evolve(state: tuple[int, ...], event: Added) -> tuple[int, ...]:
    return (*state, event.n)


counter: Decider[Add, tuple[int, ...], Added] = Decider(decide, evolve, ())
codec: Codec[Added] = Codec([Added])

Result = ExecuteResult[tuple[int, ...], Added]


def handler_on(store: EventStore, **options: Any) -> CommandHandler[Add, tuple[int, ...], Added]:
    return CommandHandler(store, counter, "count", codec, **options)


def seen(result: Result) -> tuple[int | None, int, list[Added], tuple[int, ...], int]:
    return result.version, result.position, [e.data for e in result.events], result.state, result.attempts


async def stored(store: EventStore) -> list[tuple[int, int]]:
    """``(version, n)`` of every event the stream reads."""
    return [(e.version, codec.decode_data(e).n) for e in await collect(store.read_stream("count-1"))]


Handler = CommandHandler[Add, tuple[int, ...], Added]


@pytest.fixture
def handlers(store: EventStore) -> list[Handler]:
    """The handler that runs the commands, and a fresh one (as in another process) for the retries too."""
    return [handler_on(store), handler_on(store, cache=None)]


@pytest.fixture
def handler(handlers: list[Handler]) -> Handler:
    return handlers[0]


async def retries(handlers: list[Handler], command: Add, command_id: str | UUID) -> list[Result]:
    """The same command id again, from the handler that ran it and from a fresh one."""
    return [await handler.execute("1", command, command_id=command_id) for handler in handlers]


@pytest.mark.parametrize("command_id", ["Y", UUID("0d3c2b1a-9f8e-4d7c-8b6a-5f4e3d2c1b0a")], ids=["text", "uuid"])
async def test_a_truncation_that_kept_part_of_the_command_returns_the_first_result(
    store: EventStore, handlers: list[Handler], handler: Handler, command_id: str | UUID
) -> None:
    # A handler's first look finds no first event; its fold from the stream's start sees the command's
    # second event there (its metadata names the command id: text, or a UUID written as text).
    first = await handler.execute("1", Add(2), command_id=command_id)
    assert seen(first)[2:] == ([Added(0), Added(1)], (0, 1), 1)
    await handler.execute("1", Add())
    await store.truncate_before("count-1", 1)
    # Its first event is erased: the events it still has, and the state after them as the stream reads now.
    for command in (Add(2), Add(1)):  # whatever a new decision would write
        for again in await retries(handlers, command, command_id):
            assert seen(again) == (1, first.position, [Added(1)], (1,), 1)
    assert await stored(store) == [(1, 1), (2, 2)]


async def test_a_truncation_that_erased_the_whole_command_leaves_no_trace(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    await handler.execute("1", Add(), command_id="X")
    await handler.execute("1", Add())
    await store.truncate_before("count-1", 1)
    again = await handler_on(store, cache=None).execute("1", Add(), command_id="X")
    assert seen(again)[0::2] == (2, [Added(2)], 1)  # decided and written again (docs/lifecycle.md)
    assert await stored(store) == [(1, 1), (2, 2)]


async def test_limits_that_hide_the_command_return_the_first_result(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    first = await handler.execute("1", Add(), command_id="Z")
    await handler.execute("1", Add())
    await handler.execute("1", Add())
    await store.set_stream_limits("count-1", max_count=1)
    for again in await retries(handlers, Add(), "Z"):
        assert seen(again) == (0, first.position, [Added(0)], (0,), 1)  # the state after it, not (2,)
    assert await stored(store) == [(2, 2)]


async def test_a_scavenge_that_erased_the_command_leaves_no_trace(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    await handler.execute("1", Add(), command_id="Z")
    await handler.execute("1", Add())
    await handler.execute("1", Add())
    await store.set_stream_limits("count-1", max_count=1)
    assert await store.scavenge() == 2
    again = await handler_on(store, cache=None).execute("1", Add(), command_id="Z")
    assert seen(again)[0::2] == (3, [Added(3)], 1)  # decided and written again (docs/lifecycle.md)
    assert await stored(store) == [(3, 3)]


async def test_limits_that_hide_part_of_a_command_at_the_start_return_the_first_result(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    first = await handler.execute("1", Add(2), command_id="P")
    await store.set_stream_limits("count-1", max_count=1)
    for again in await retries(handlers, Add(2), "P"):
        assert seen(again) == (1, first.position, [Added(0), Added(1)], (0, 1), 1)
    assert await stored(store) == [(1, 1)]


async def test_limits_that_hide_earlier_events_fold_from_where_the_stream_starts(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    await handler.execute("1", Add())
    first = await handler.execute("1", Add(), command_id="L")
    await handler.execute("1", Add())
    await store.set_stream_limits("count-1", max_count=2)
    for again in await retries(handlers, Add(), "L"):
        assert seen(again) == (1, first.position, [Added(1)], (1,), 1)  # as load and state_at fold it
    assert await handler_on(store, cache=None).state_at("1", version=1) == (1,)
    assert await stored(store) == [(1, 1), (2, 2)]


async def test_a_soft_delete_returns_the_first_result(
    store: EventStore, handlers: list[Handler], handler: Handler
) -> None:
    first = await handler.execute("1", Add(), command_id="W")
    await handler.execute("1", Add())
    await store.delete_stream("count-1")
    for again in await retries(handlers, Add(), "W"):
        assert seen(again) == (0, first.position, [Added(0)], (0,), 1)  # not the empty state
    assert await store.stream_version("count-1") is None  # nothing re-created the stream
    await handler.execute("1", Add())  # re-created: version 2, decided on the empty state
    for again in await retries(handlers, Add(), "W"):
        assert seen(again) == (0, first.position, [Added(0)], (0,), 1)
    assert await stored(store) == [(2, 0)]


async def unavailable(handlers: list[Handler], command: Add, command_id: str) -> ResultUnavailable:
    errors = []
    for handler in handlers:
        with pytest.raises(ResultUnavailable) as info:
            await handler.execute("1", command, command_id=command_id)
        errors.append(info.value)
    assert [(e.stream, e.command_id, e.version, e.position) for e in errors] == [errors[0].args] * 2
    assert pickle.loads(pickle.dumps(errors[0])).args == errors[0].args
    return errors[0]


@pytest.mark.parametrize("hide", ["soft delete", "limits"])
async def test_a_hidden_command_after_hidden_events_raises_result_unavailable(
    store: EventStore, handlers: list[Handler], handler: Handler, hide: str
) -> None:
    await handler.execute("1", Add())
    first = await handler.execute("1", Add(2), command_id="H")
    if hide == "soft delete":
        await store.delete_stream("count-1")
        after: list[tuple[int, int]] = []
    else:
        await handler.execute("1", Add())
        await store.set_stream_limits("count-1", max_count=2)  # hides the command's first event and version 0
        after = [(2, 2), (3, 3)]
    error = await unavailable(handlers, Add(), "H")
    assert error.args == ("count-1", "H", 2, first.position)
    assert str(error) == (
        "count-1: command 'H' ran already (its last event is version 2, position "
        f"{first.position}), but the stream no longer reads its first event nor the events before it, "
        "so the state after it cannot be folded"
    )
    assert await stored(store) == after  # nothing decided or written


async def test_a_tombstone_refuses_the_retry(store: EventStore, handlers: list[Handler], handler: Handler) -> None:
    await handler.execute("1", Add(), command_id="V")
    await store.delete_stream("count-1", hard=True)
    for retrier in handlers:
        with pytest.raises(StreamDeleted) as info:
            await retrier.execute("1", Add(), command_id="V")
        assert str(info.value) == "count-1: the stream is deleted (last version 0)"


async def test_an_erased_first_event_with_the_rest_hidden_is_out_of_reach(store: EventStore, handler: Handler) -> None:
    """The one case docs/lifecycle.md names as out of reach: the stream no longer starts with the command's
    stored events, and their ids are not the first event's, so no lookup finds them."""
    await handler.execute("1", Add(2), command_id="G")
    await handler.execute("1", Add())
    await store.truncate_before("count-1", 1)  # erases the command's first event
    await store.set_stream_limits("count-1", max_count=1)  # hides its second
    fresh = handler_on(store, cache=None)
    with pytest.raises(DuplicateEventId) as info:  # as many events as before: the second one's id is stored
        await fresh.execute("1", Add(2), command_id="G")
    assert (info.value.stream, info.value.existing_stream, info.value.existing_version) == ("count-1", "count-1", 1)
    assert await stored(store) == [(2, 2)]
    again = await fresh.execute("1", Add(), command_id="G")  # fewer: decided and written again
    assert seen(again)[0::2] == (3, [Added(3)], 1)
