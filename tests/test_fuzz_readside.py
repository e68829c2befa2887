"""Hostile input to the read side on every store: projection names, filters and stored bytes.

Only EpochErrors come out of a runner: an undecodable stored event is parked or stops its projection
with ``ProjectionFailed`` naming it, never a raw exception; checkpoints keep any valid name."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from epoch import Codec, EventStore, NewEvent, open_store
from epoch.errors import ConfigurationError, EpochError, InvalidStreamName
from epoch.projections import ProjectionFailed, ProjectionRunner, Retry
from epoch.records import EventEnvelope
from epoch.stores.copy import copy_store
from tests.hostile import hostile_json, hostile_names, is_valid_name, valid_names

FAST = Retry(retries=0, backoff=0.001)
_fresh = itertools.count()


@dataclass(frozen=True)
class Noted:
    text: str


codec: Codec[Noted] = Codec([Noted])


class Notes:
    def __init__(self, name: str, policy: str = "stop", categories: Any = None) -> None:
        self.name = name
        self.policy = policy
        self.categories = categories
        self.seen: list[tuple[str, int, str]] = []

    async def handle(self, envelope: EventEnvelope[Noted]) -> None:
        self.seen.append((envelope.stream, envelope.version, envelope.data.text))


@given(name=hostile_names)
@example(name="a\x00b")
@example(name="\ud800")
@example(name="'; DROP TABLE epoch_checkpoints; --")
async def test_projection_names(store: EventStore, name: str) -> None:
    category = f"names{next(_fresh)}"  # the projection reads only its own category: one event
    await store.append(f"{category}-1", [codec.encode(Noted("x"))])
    try:
        runner = ProjectionRunner(store, codec, [Notes(name, categories=category)], retry=FAST)
    except ConfigurationError as exc:
        assert not is_valid_name(name), exc
        assert str(exc).startswith(f"projection name {name!r} ")
        return
    assert is_valid_name(name), f"{name!r} was accepted"
    await runner.run_until_idle()
    head = await store.head_position()
    [status] = await runner.status()
    assert (status.name, status.checkpoint) == (name, head)
    again = Notes(name, categories=category)
    await ProjectionRunner(store, codec, [again], checkpoints=runner.checkpoints, retry=FAST).run_until_idle()
    assert again.seen == []  # resumed from the checkpoint stored under that exact name


@given(categories=st.one_of(hostile_names, st.lists(hostile_names, max_size=3)))
async def test_projection_categories(store: EventStore, categories: Any) -> None:
    names = [categories] if isinstance(categories, str) else categories
    valid = all(is_valid_name(n) and "-" not in n for n in names)
    try:
        runner = ProjectionRunner(store, codec, [Notes(f"p{next(_fresh)}", categories=categories)], retry=FAST)
        await runner.run_until_idle()
    except EpochError as exc:
        assert not valid, exc
        assert isinstance(exc, (InvalidStreamName, ConfigurationError)), exc
        return
    assert valid, f"{categories!r} was accepted"


@given(data=hostile_json)
@example(data=b'{"text": "\\ud800"}')
@example(data=b'{"text": 1}')
async def test_undecodable_events_are_parked_and_the_rest_handled(store: EventStore, data: bytes) -> None:
    stream = f"notes-{next(_fresh)}"
    await store.append(stream, [codec.encode(Noted("before")), NewEvent("Noted", data), codec.encode(Noted("after"))])
    good = _decodes(data)
    # One projection for all examples: each run resumes from the last one's checkpoint (a fresh name per
    # example would re-read the whole, growing log every time).
    notes = Notes("parker", policy="park", categories="notes")
    runner = ProjectionRunner(store, codec, [notes], retry=FAST)
    await runner.run_until_idle()
    mine = [(v, text) for s, v, text in notes.seen if s == stream]
    parked = [p for p in await runner.parking.list(notes.name) if p.event.stream == stream]
    if good is None:
        assert mine == [(0, "before"), (2, "after")]
        assert [(p.event.version, p.event.data) for p in parked] == [(1, data)]
        assert parked[0].error.startswith(f"DecodeError: {stream}: cannot decode event 'Noted' at version 1: ")
    else:
        assert mine == [(0, "before"), (1, good), (2, "after")]
        assert parked == []


@pytest.mark.parametrize("data", [b"[" * 5000, b'{"text": "\xff"}', b'{"text": NaN}', b"\x00"])
async def test_an_undecodable_event_stops_its_projection_by_name(store: EventStore, data: bytes) -> None:
    before = await store.append("notes-1", [codec.encode(Noted("before")), NewEvent("Noted", data)])
    notes = Notes("stopper", categories="notes")
    runner = ProjectionRunner(store, codec, [notes], retry=FAST)
    with pytest.raises(ProjectionFailed) as info:
        await runner.run_until_idle()
    assert (info.value.name, info.value.stream, info.value.version) == ("stopper", "notes-1", 1)
    assert info.value.position == before.positions[1]
    assert info.value.error.startswith("DecodeError: notes-1: cannot decode event 'Noted' at version 1: ")
    assert notes.seen == [("notes-1", 0, "before")]
    [status] = await runner.status()
    assert status.checkpoint == before.positions[0]


def _decodes(data: bytes) -> str | None:
    """The text a well-formed ``Noted`` payload carries, or ``None``."""
    import msgspec

    try:
        value = msgspec.json.decode(data, type=Noted)
        value.text.encode("utf-8")
    except (msgspec.DecodeError, RecursionError, UnicodeError, ValueError):
        return None
    return value.text


@given(events=st.lists(st.tuples(valid_names, hostile_json, valid_names), max_size=4))
async def test_copy_carries_any_valid_name_and_any_bytes(
    store: EventStore, tmp_path_factory: pytest.TempPathFactory, events: list[tuple[str, bytes, str]]
) -> None:
    target = tmp_path_factory.getbasetemp() / f"copy-{id(store)}.db"
    src_head = await store.head_position()
    for stream, data, type_name in events:
        await store.append(stream, [NewEvent(type_name[:256].rstrip() or "T", data)])
    async with open_store(f"sqlite:///{target}") as dst:
        dst_head = await dst.head_position()
        result = await copy_store(store, dst)  # resumes after what earlier examples copied
        copied = [_key(e) async for e in dst.read_all(after=dst_head)]
    assert result.copied == len(events)
    assert copied == [_key(e) async for e in store.read_all(after=src_head)]


def _key(event: Any) -> tuple[object, ...]:
    return (event.stream, event.version, event.id, event.type, event.data, event.metadata, event.recorded_at)
