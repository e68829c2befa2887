"""Guarantee 12 as properties: what ``encode`` accepts, ``decode`` gives back equal; hostile bytes give DecodeErrors.

Events of the three kinds of class are built from hostile values (NaN, infinity, ints of every size, floats
in int fields, lone surrogates). ``encode`` must refuse exactly the events an independent rule says JSON
cannot carry back (:func:`carries`), and give back every other one equal. Then a real SQLite stream and a
real ``CommandHandler`` show that a refused event leaves the stream as it was and loadable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
import pydantic
import pytest
from hypothesis import event as event_
from hypothesis import example, given
from hypothesis import strategies as st

from epoch import (
    Codec,
    CommandHandler,
    Decider,
    DecodeError,
    InvalidEvent,
    NewEvent,
    RecordedEvent,
    open_store,
)
from tests.hostile import any_text, hostile_json, huge_ints

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INT_DIGITS = 4300  # Python's (and so msgspec's and pydantic's) limit for writing and reading an int


def recorded_from(event: NewEvent, stream: str = "sensor-1", version: int = 0) -> RecordedEvent:
    """What a store hands back for ``event``."""
    return RecordedEvent(stream, version, version + 1, event.id, event.type, event.data, event.metadata, NOW)


@dataclasses.dataclass(frozen=True)
class Probe:
    x: float
    n: int


@dataclasses.dataclass(frozen=True)
class Sample:
    n: int
    x: float
    text: str
    raw: bytes
    xs: list[float]
    by_name: dict[str, float]
    maybe: float | None
    probe: Probe


class ProbeStruct(msgspec.Struct, frozen=True):
    x: float
    n: int


class SampleStruct(msgspec.Struct, frozen=True):
    n: int
    x: float
    text: str
    raw: bytes
    xs: list[float]
    by_name: dict[str, float]
    maybe: float | None
    probe: ProbeStruct


class ProbeModel(pydantic.BaseModel):
    x: float
    n: int


class SampleModel(pydantic.BaseModel):
    n: int
    x: float
    text: str
    raw: bytes
    xs: list[float]
    by_name: dict[str, float]
    maybe: float | None
    probe: ProbeModel


AnySample = Sample | SampleStruct | SampleModel
samples: Codec[AnySample] = Codec([Sample, SampleStruct, SampleModel])
PROBES: dict[type, type] = {Sample: Probe, SampleStruct: ProbeStruct, SampleModel: ProbeModel}


def sometimes(ordinary: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], one_in: int) -> st.SearchStrategy[Any]:
    """``hostile`` once in ``one_in`` draws: an event has about ten values, and one bad value refuses it."""
    return st.integers(1, one_in).flatmap(lambda k: hostile if k == 1 else ordinary)


# Numbers as an attacker (or a division by zero) makes them: every float, ints far beyond 64 bits and
# beyond the digit limit, and the wrong kind for the field (dataclasses and Structs take it).
ints = sometimes(
    st.integers() | huge_ints,
    st.sampled_from([10**INT_DIGITS - 1, 10**INT_DIGITS, -(10**INT_DIGITS), 2**100]) | st.floats() | st.booleans(),
    one_in=8,
)
floats = sometimes(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    st.floats() | huge_ints | st.sampled_from([2**53 + 1, 10**400, math.nan, math.inf, -math.inf]),
    one_in=8,
)
texts = sometimes(st.text(max_size=20), any_text, one_in=4)  # any_text holds a lone surrogate more often than not


def _is_int(value: object) -> bool:
    return type(value) is int and abs(value) < 10**INT_DIGITS


def _is_float(value: object) -> bool:
    """A finite float, or an int a float field gives back exactly."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is not int:
        return False
    try:
        return float(value) == value
    except OverflowError:
        return False


def _is_text(value: object) -> bool:
    return isinstance(value, str) and not any("\ud800" <= char <= "\udfff" for char in value)


def carries(event: AnySample) -> bool:
    """The reference rule, written from the JSON side: can this event be written and read back equal?"""
    probe = event.probe
    return (
        _is_int(event.n)
        and _is_float(event.x)
        and _is_text(event.text)
        # pydantic writes bytes as UTF-8 text; msgspec as base64, which carries any bytes.
        and (not isinstance(event, SampleModel) or _utf8(event.raw))
        and all(_is_float(x) for x in event.xs)
        and all(_is_text(key) and _is_float(x) for key, x in event.by_name.items())
        and (event.maybe is None or _is_float(event.maybe))
        and _is_float(probe.x)
        and _is_int(probe.n)
    )


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def any_sample(draw: st.DrawFn) -> AnySample:
    cls = draw(st.sampled_from([Sample, SampleStruct, SampleModel]))
    probe_fields = {"x": draw(floats), "n": draw(ints)}
    fields = {
        "n": draw(ints),
        "x": draw(floats),
        "text": draw(texts),
        "raw": draw(st.binary(max_size=16)),
        "xs": draw(st.lists(floats, max_size=4)),
        "by_name": draw(st.dictionaries(texts, floats, max_size=3)),
        "maybe": draw(st.none() | floats),
    }
    if cls is SampleModel:
        try:
            return SampleModel(probe=ProbeModel(**probe_fields), **fields)
        except pydantic.ValidationError:  # pydantic refused a value itself (1.5 for an int): nothing to encode
            cls = Sample
    return cls(probe=PROBES[cls](**probe_fields), **fields)  # type: ignore[no-any-return]


good = Sample(2**100, 0.1, "é", b"\xff", [1e308, -0.0], {"a": 2**53}, None, Probe(-1.5, -(2**63)))
bad = SampleStruct(1, math.nan, "a", b"", [], {}, None, ProbeStruct(0.0, 0))


@given(any_sample())
@example(good)
@example(bad)
@example(SampleModel(n=1, x=1.0, text="\ud83d", raw=b"", xs=[], by_name={}, maybe=math.inf, probe=ProbeModel(x=0, n=0)))
def test_encode_refuses_exactly_what_would_not_decode_back(event: AnySample) -> None:
    try:
        stored = recorded_from(samples.encode(event, {"n": 1}))
    except InvalidEvent as refused:
        event_("refused")
        assert not carries(event), f"refused an event JSON carries: {refused}"
        assert str(refused).startswith(f"invalid event: cannot encode {type(event).__name__!r}: ")
        return
    event_("accepted")
    assert carries(event), "accepted an event that JSON does not carry back"
    assert samples.decode_data(stored) == event
    envelope = samples.decode(stored)
    assert envelope.data == event
    assert envelope.metadata == {"n": 1}
    assert samples.decode_data(recorded_from(samples.encode(envelope.data))) == event  # and again


keys = sometimes(texts, st.integers() | st.floats(), one_in=8)
json_values = st.recursive(
    st.none() | st.booleans() | floats | st.integers() | huge_ints | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)


def json_carries(value: object) -> bool:
    """The reference rule for metadata: plain JSON values, str keys, finite floats, no lone surrogates."""
    if value is None or type(value) is bool:
        return True
    if type(value) is int:
        return _is_int(value)
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, str):
        return _is_text(value)
    if isinstance(value, list):
        return all(json_carries(item) for item in value)
    assert isinstance(value, dict)
    return all(_is_text(key) and json_carries(item) for key, item in value.items())


@given(st.dictionaries(keys, json_values, max_size=4))
@example({"ok": [1, 2.5, None, "x", {"y": 2**100}]})
@example({"bad": [1, {"y": math.nan}]})
def test_metadata_is_refused_exactly_when_it_would_not_decode_back(metadata: dict[Any, Any]) -> None:
    metadata.pop("$event_version", None)  # the codec's own key
    try:
        stored = recorded_from(samples.encode(good, metadata))
    except InvalidEvent as refused:
        event_("refused")
        assert not json_carries(metadata), f"refused metadata JSON carries: {refused}"
        assert str(refused).startswith("invalid event: cannot encode 'Sample': metadata ")
        return
    event_("accepted")
    assert json_carries(metadata), "accepted metadata that JSON does not carry back"
    assert samples.decode(stored).metadata == metadata


# Decoding hostile stored bytes: only DecodeErrors (UnknownEventType included) come out.

upcasting: Codec[AnySample] = Codec(
    [Sample, SampleStruct, SampleModel], {("Reading", 1): lambda data: ("Sample", {**data, "n": 1})}
)
stored_types = st.sampled_from(["Sample", "SampleStruct", "SampleModel", "Reading", "Unknown"])
metadata_bytes = st.one_of(
    st.just(b""), hostile_json, st.sampled_from([b'{"$event_version": 2}', b'{"$event_version": 0}'])
)


@given(stored_types, hostile_json, metadata_bytes)
@example("Sample", b'{"a": "\xff"}', b'{"a": "\xff"}')
@example("Reading", b'{"a":' * 5000 + b"1" + b"}" * 5000, b"")
def test_decoding_hostile_bytes_raises_only_decode_errors(type_name: str, data: bytes, metadata: bytes) -> None:
    stored = RecordedEvent("sensor-1", 3, 4, uuid4(), type_name, data, metadata, NOW)
    for decode in (upcasting.decode, upcasting.decode_data):
        try:
            decode(stored)
            event_("decoded")
        except DecodeError as error:
            event_(type(error).__name__)
            assert (error.stream, error.version, error.type) == ("sensor-1", 3, type_name)
            assert str(error).startswith("sensor-1: ")


# One refused event never bricks a stream: real SQLite, real CommandHandler.


@given(st.lists(any_sample(), min_size=1, max_size=6))
@example([good, bad, good])
def test_a_refused_event_leaves_a_sqlite_stream_loadable(events: list[AnySample]) -> None:
    asyncio.run(_append_what_encodes(events))


async def _append_what_encodes(events: list[AnySample]) -> None:
    path = Path(f"/tmp/epoch-fuzz-codec-{uuid4().hex}.db")
    try:
        async with open_store(f"sqlite:///{path}") as store:
            accepted = []
            for event in events:
                try:
                    new = samples.encode(event)
                except InvalidEvent:
                    assert not carries(event)
                    continue
                await store.append("sensor-1", [new])
                accepted.append(event)
            stored = [samples.decode_data(r) async for r in store.read_stream("sensor-1")]
            assert stored == accepted
            assert await store.stream_version("sensor-1") == (len(accepted) - 1 if accepted else None)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Measure:
    values: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Measured:
    value: float


def decide(command: Measure, state: tuple[float, ...]) -> list[Measured]:
    return [Measured(value) for value in command.values]


def evolve(state: tuple[float, ...], event: Measured) -> tuple[float, ...]:
    return (*state, event.value)


sensor: Decider[Measure, tuple[float, ...], Measured] = Decider(decide, evolve, ())


async def test_a_decider_emitting_nan_names_the_stream_and_writes_nothing(store_url: str) -> None:
    async with open_store(store_url) as store:
        handler = CommandHandler(store, sensor, "sensor", Codec([Measured]))
        first = await handler.execute("1", Measure((1.5,)))
        head = await store.head_position()
        cases = [
            (Measure((math.nan,)), None, "index 0: cannot encode 'Measured': $.value is nan"),
            (Measure((2.0, math.inf)), None, "index 1: cannot encode 'Measured': $.value is inf"),  # nothing of it
            (Measure((2.0,)), {"ratio": -math.inf}, "index 0: cannot encode 'Measured': metadata $['ratio'] is -inf"),
        ]
        for command, metadata, where in cases:
            with pytest.raises(InvalidEvent) as caught:
                await handler.execute("1", command, metadata=metadata)
            assert str(caught.value) == f"sensor-1: invalid event at {where}, and JSON has no NaN or infinity"
            assert caught.value.stream == "sensor-1"
            assert isinstance(caught.value.__cause__, InvalidEvent)  # the codec's own, without a stream
            assert await store.head_position() == head
            assert await store.stream_version("sensor-1") == first.version == 0
        later = await handler.execute("1", Measure((2.5, 3.0)))
        assert (later.version, later.state) == (2, (1.5, 2.5, 3.0))
        fresh = CommandHandler(store, sensor, "sensor", Codec([Measured]), cache=None)
        assert await fresh.load("1") == ((1.5, 2.5, 3.0), 2)
