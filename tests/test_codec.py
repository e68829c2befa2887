"""The JSON codec: event classes of three kinds, schema versions, upcasting, and loud failures."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, cast
from uuid import RFC_4122, UUID, uuid4

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import Codec, ConfigurationError, DecodeError, InvalidEvent, NewEvent, RecordedEvent, UnknownEventType
from epoch.codec import Upcaster, encode_events, event_type_of, event_version_of
from epoch.records import uuid4s
from tests.bank import AccountEvent, Closed, Deposited, Opened, Withdrawn
from tests.hostile import _deep

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(event: NewEvent, stream: str = "account-1", version: int = 0) -> RecordedEvent:
    """What a store would hand back for ``event``."""
    return RecordedEvent(stream, version, version + 1, event.id, event.type, event.data, event.metadata, NOW)


def raw(type: str, data: bytes, metadata: bytes = b"") -> RecordedEvent:
    return record(NewEvent(type, data, metadata))


def short(value: object) -> str:
    """A test id: the start of the value's repr (an int of 5000 digits has none)."""
    try:
        return repr(value)[:30]
    except ValueError:
        return type(value).__name__


class Transferred(msgspec.Struct, frozen=True):
    event_type: ClassVar[str] = "account.transferred"
    amount: int
    to: str
    at: datetime


class Renamed(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
    event_version: ClassVar[int] = 2
    first: str
    last: str = pydantic.Field(alias="lastName")


codec: Codec[AccountEvent | Transferred | Renamed] = Codec([Opened, Deposited, Withdrawn, Closed, Transferred, Renamed])


@pytest.mark.parametrize(
    "event",
    [
        Opened("ada"),
        Closed(),
        Transferred(5, "account-2", NOW),
        Renamed(first="Ada", lastName="Lovelace"),
    ],
    ids=["dataclass", "empty dataclass", "struct", "pydantic"],
)
def test_round_trip(event: AccountEvent | Transferred | Renamed) -> None:
    stored = record(codec.encode(event, {"who": "test"}))
    assert codec.decode_data(stored) == event
    envelope = codec.decode(stored)
    assert envelope.data == event
    assert envelope.type == stored.type == event_type_of(type(event))
    assert envelope.metadata["who"] == "test"
    assert (envelope.stream, envelope.version, envelope.position, envelope.id, envelope.recorded_at) == (
        stored.stream,
        stored.version,
        stored.position,
        stored.id,
        stored.recorded_at,
    )


def test_type_names_and_versions() -> None:
    assert codec.event_types == {"Opened", "Deposited", "Withdrawn", "Closed", "account.transferred", "Renamed"}
    assert event_type_of(Transferred) == "account.transferred" and event_version_of(Transferred) == 1
    assert event_version_of(Renamed) == 2


def test_version_one_is_left_out_of_the_metadata() -> None:
    assert codec.encode(Deposited(1)).metadata == b""
    assert codec.encode(Deposited(1), {"$event_version": 7}).metadata == b""  # the codec owns the key
    assert msgspec.json.decode(codec.encode(Renamed(first="a", lastName="b")).metadata) == {"$event_version": 2}
    meta = msgspec.json.decode(codec.encode(Renamed(first="a", lastName="b"), {"$event_version": 9, "k": 1}).metadata)
    assert meta == {"$event_version": 2, "k": 1}


def test_data_is_json_with_aliases() -> None:
    assert msgspec.json.decode(codec.encode(Renamed(first="a", lastName="b")).data) == {"first": "a", "lastName": "b"}
    assert codec.encode(Deposited(3)).data == b'{"amount":3}'


def test_ids() -> None:
    given_id = uuid4()
    assert codec.encode(Deposited(1), id=given_id).id == given_id
    assert codec.encode(Deposited(1)).id != codec.encode(Deposited(1)).id


def test_encode_rejects_unregistered_and_unencodable_events() -> None:
    @dataclasses.dataclass
    class Stranger:
        x: int

    with pytest.raises(InvalidEvent) as info:
        codec.encode(Stranger(1))  # type: ignore[arg-type]
    assert (
        str(info.value)
        == "invalid event: test_encode_rejects_unregistered_and_unencodable_events.<locals>.Stranger is not registered with the codec"
    )
    with pytest.raises(InvalidEvent) as info:
        codec.encode(Opened(object()))  # type: ignore[arg-type]
    assert (
        str(info.value)
        == "invalid event: cannot encode 'Opened': $.owner: TypeError: Encoding objects of type object is unsupported"
    )
    with pytest.raises(InvalidEvent) as info:
        codec.encode(Opened("ada"), {"x": object()})
    assert (
        str(info.value)
        == "invalid event: cannot encode 'Opened': metadata $['x']: TypeError: Encoding objects of type object is unsupported"
    )


def test_configuration_errors() -> None:
    @dataclasses.dataclass
    class Opened:  # same name as bank.Opened
        owner: str

    with pytest.raises(ConfigurationError) as info:
        Codec([bank_opened(), Opened])
    assert str(info.value) == "Opened and test_configuration_errors.<locals>.Opened share the event type 'Opened'"
    with pytest.raises(ConfigurationError) as info:
        Codec([Opened("x")])  # type: ignore[arg-type]
    assert str(info.value) == "event classes must be classes, not test_configuration_errors.<locals>.Opened(owner='x')"
    with pytest.raises(ConfigurationError) as info:
        Codec([int])
    assert str(info.value) == "int must be a dataclass, a msgspec.Struct or a pydantic model"

    class BadName(msgspec.Struct):
        event_type: ClassVar[object] = 3

    class BadVersion(msgspec.Struct):
        event_version: ClassVar[object] = 0

    class FieldName(msgspec.Struct):
        event_type: str = "x"  # a field, not a ClassVar: msgspec turns it into a descriptor

    cases: list[tuple[type, str]] = [(BadName, "event_type"), (BadVersion, "event_version"), (FieldName, "event_type")]
    for cls, match in cases:
        with pytest.raises(ConfigurationError, match=match):
            Codec([cls])
    upcast: Upcaster = dict
    for key in [("Deposited", 0), ("Deposited", True), "Deposited", ("Deposited", 1, 2)]:
        with pytest.raises(ConfigurationError, match="upcaster keys"):
            Codec([Deposited], {key: upcast})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError) as info:
        Codec([Deposited], {("Deposited", 1): upcast})
    assert str(info.value) == "upcaster ('Deposited', 1) never runs: Deposited is at version 1"


def bank_opened() -> type[AccountEvent]:
    return Opened


@pytest.mark.parametrize(
    ("stored", "match"),
    [
        (raw("Deposited", b"{"), "DecodeError"),
        (raw("Deposited", b"[1]"), "Expected `object`"),
        (raw("Deposited", b'{"amount": "ten"}'), r"Expected `int`, got `str` - at `\$.amount`"),
        (raw("Deposited", b"{}"), "missing required field `amount`"),
        (raw("Renamed", b'{"first": "a"}', b'{"$event_version": 2}'), "lastName"),
        (raw("Deposited", b'{"amount": 1}', b"not json"), "bad metadata"),
        (raw("Deposited", b'{"amount": 1}', b"[]"), "bad metadata"),
        (raw("Deposited", b'{"amount": 1}', b'{"$event_version": "1"}'), "event_version"),
        (raw("Deposited", b'{"amount": 1}', b'{"$event_version": 0}'), "event_version"),
        (raw("Deposited", b'{"amount": 1}', b'{"$event_version": 2}'), "newer than Deposited"),
        (raw("Renamed", b'{"first": "a", "lastName": "b"}'), "no upcaster from 'Renamed' version 1"),
    ],
)
def test_bad_payloads_raise_decode_error(stored: RecordedEvent, match: str) -> None:
    for decode in (codec.decode, codec.decode_data):
        with pytest.raises(DecodeError, match=match) as caught:
            decode(stored)
        assert type(caught.value) is DecodeError
        assert (caught.value.stream, caught.value.version, caught.value.type) == ("account-1", 0, stored.type)
        assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args


def test_decode_errors_chain_the_cause() -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode_data(raw("Deposited", b'{"amount": "ten"}'))
    assert isinstance(caught.value.__cause__, msgspec.ValidationError)


def test_unknown_types_are_never_dropped() -> None:
    for decode in (codec.decode, codec.decode_data):
        with pytest.raises(UnknownEventType) as info:
            decode(raw("Robbed", b"{}"))
        assert (
            str(info.value) == "account-1: unknown event type 'Robbed' at version 0 (register its class with the codec)"
        )


class DepositedV3(msgspec.Struct, frozen=True):
    """Deposited after two schema changes: cents (v2), then a currency (v3)."""

    event_type: ClassVar[str] = "Deposited"
    event_version: ClassVar[int] = 3
    cents: int
    currency: str


def to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"cents": data.pop("amount") * 100}


def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


def credited_to_deposited(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "Deposited", {"cents": data["sum"]}


upcasting: Codec[DepositedV3] = Codec(
    [DepositedV3],
    {("Deposited", 1): to_cents, ("Deposited", 2): add_currency, ("Credited", 1): credited_to_deposited},
)


def test_upcaster_chain() -> None:
    assert upcasting.event_types == {"Deposited", "Credited"}
    assert upcasting.decode_data(raw("Deposited", b'{"amount": 2}')) == DepositedV3(200, "EUR")
    v2 = raw("Deposited", b'{"cents": 5}', b'{"$event_version": 2}')
    assert upcasting.decode_data(v2) == DepositedV3(5, "EUR")
    current = record(upcasting.encode(DepositedV3(7, "USD")))
    assert upcasting.decode_data(current) == DepositedV3(7, "USD")


def test_upcaster_renames_a_type() -> None:
    envelope = upcasting.decode(raw("Credited", b'{"sum": 3}', b'{"k": "v"}'))
    assert envelope.data == DepositedV3(3, "EUR")  # Credited v1 -> Deposited v2 -> Deposited v3
    assert envelope.type == "Deposited"
    assert envelope.metadata == {"k": "v"}  # metadata stays as stored


@pytest.mark.parametrize(
    ("upcaster", "match"),
    [
        (lambda data: data["missing"], r"upcaster \('Deposited', 1\) failed: KeyError"),
        (lambda data: [data], "returned"),
        (lambda data: ("Deposited", [data]), "returned"),
        (lambda data: {"cents": "many"}, "after upcasting to version 2"),
        (lambda data: ("Elsewhere", data), "no upcaster from 'Elsewhere' version 2"),
    ],
)
def test_upcaster_failures(upcaster: Upcaster, match: str) -> None:
    class DepositedV2(msgspec.Struct):
        event_type: ClassVar[str] = "Deposited"
        event_version: ClassVar[int] = 2
        cents: int

    broken = Codec([DepositedV2], {("Deposited", 1): upcaster})
    with pytest.raises(DecodeError, match=match):
        broken.decode_data(raw("Deposited", b'{"amount": 1}'))
    with pytest.raises(DecodeError) as info:
        broken.decode(raw("Deposited", b"[]"))
    assert (
        str(info.value)
        == "account-1: cannot decode event 'Deposited' at version 0: ValidationError: Expected `object`, got `array`"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    text: str
    number: int
    ratio: float
    flags: list[bool]
    tags: dict[str, str]
    maybe: UUID | None


class StructPayload(msgspec.Struct, frozen=True):
    text: str
    number: int
    ratio: float
    flags: list[bool]
    tags: dict[str, str]
    maybe: UUID | None


class ModelPayload(pydantic.BaseModel):
    text: str
    number: int
    ratio: float
    flags: list[bool]
    tags: dict[str, str]
    maybe: UUID | None


AnyPayload = Payload | StructPayload | ModelPayload
payloads: Codec[AnyPayload] = Codec([Payload, StructPayload, ModelPayload])
fields = {
    "text": st.text(),
    "number": st.integers(-(2**63), 2**63 - 1),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "flags": st.lists(st.booleans()),
    "tags": st.dictionaries(st.text(), st.text()),
    "maybe": st.none() | st.uuids(),
}


@given(
    st.one_of(st.builds(Payload, **fields), st.builds(StructPayload, **fields), st.builds(ModelPayload, **fields)),
    st.dictionaries(st.text(), st.none() | st.integers(-(2**63), 2**63 - 1) | st.text()),
)
def test_round_trip_property(event: AnyPayload, metadata: dict[str, object]) -> None:
    stored = record(payloads.encode(event, metadata))
    assert payloads.decode_data(stored) == event
    envelope = payloads.decode(stored)
    assert envelope.data == event
    assert envelope.metadata == {k: v for k, v in metadata.items() if k != "$event_version"}


@given(st.integers(1, 30), st.integers(1, 30), st.integers())
def test_upcaster_chain_property(stored_version: int, extra: int, start: int) -> None:
    """Each upcaster adds one; a chain from any stored version lands on the current one."""
    current = stored_version + extra

    class Counter(msgspec.Struct):
        event_version: ClassVar[int] = current
        n: int
        hops: int

    def hop(data: dict[str, Any]) -> dict[str, Any]:
        return {"n": data["n"] + 1, "hops": data.get("hops", 0) + 1}

    chain = Codec([Counter], {("Counter", v): hop for v in range(1, current)})
    meta = msgspec.json.encode({"$event_version": stored_version})
    decoded = chain.decode_data(raw("Counter", msgspec.json.encode({"n": start}), meta))
    assert decoded.n == start + extra and decoded.hops == extra


def test_decode_data_is_the_envelopes_data() -> None:
    """The fast path (used to fold streams; its speed is checked by `epoch bench`) agrees with decode."""
    events = [record(codec.encode(Deposited(i), {"$correlation_id": "c"}), version=i) for i in range(1_000)]
    assert [codec.decode_data(e) for e in events] == [codec.decode(e).data for e in events]


# What encode writes, decode reads (guarantee 12): every kind of class, every place a bad value can hide.


@dataclasses.dataclass(frozen=True)
class Inner:
    x: float


class InnerStruct(msgspec.Struct, frozen=True):
    x: float


class InnerModel(pydantic.BaseModel):
    x: float


@dataclasses.dataclass(frozen=True)
class Reading:
    value: float = 0.0
    values: list[float] = dataclasses.field(default_factory=list)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner | None = None
    maybe: float | None = None
    either: int | float | str = 0
    extra: Any = None


class ReadingStruct(msgspec.Struct, frozen=True):
    value: float = 0.0
    values: list[float] = msgspec.field(default_factory=list)
    scores: dict[str, float] = msgspec.field(default_factory=dict)
    inner: InnerStruct | None = None
    maybe: float | None = None
    either: int | float | str = 0
    extra: Any = None


class ReadingModel(pydantic.BaseModel):
    value: float = 0.0
    values: list[float] = []
    scores: dict[str, float] = {}
    inner: InnerModel | None = None
    maybe: float | None = None
    either: int | float | str = 0
    extra: Any = None


readings: Codec[Reading | ReadingStruct | ReadingModel] = Codec([Reading, ReadingStruct, ReadingModel])
NO_NAN = "and JSON has no NaN or infinity"
nan, inf = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"value": nan}, f"$.value is nan, {NO_NAN}"),
        ({"value": inf}, f"$.value is inf, {NO_NAN}"),
        ({"value": -inf}, f"$.value is -inf, {NO_NAN}"),
        ({"values": [1.0, 2.0, -inf]}, f"$.values[2] is -inf, {NO_NAN}"),
        ({"scores": {"a": 1.0, "b": nan}}, f"$.scores['b'] is nan, {NO_NAN}"),
        ({"inner": "nan"}, f"$.inner.x is nan, {NO_NAN}"),
        ({"maybe": nan}, f"$.maybe is nan, {NO_NAN}"),  # would read back as None: silently another event
        ({"either": inf}, f"$.either is inf, {NO_NAN}"),
        ({"extra": {"k": [nan]}}, f"$.extra['k'][0] is nan, {NO_NAN}"),
        ({"extra": (1, 2)}, "$.extra would decode as [1, 2], not (1, 2)"),
        ({"extra": {1: "a"}}, "$.extra has the key 1, not a str (JSON object keys are strings)"),
        ({"extra": "a\ud800"}, "$.extra holds a lone surrogate ('a\\ud800'), which UTF-8 cannot encode"),
        ({"scores": {"\udfff": 1.0}}, "$.scores has the key '\\udfff', a lone surrogate that UTF-8 cannot encode"),
    ],
    ids=lambda value: None if isinstance(value, str) else short(value),
)
@pytest.mark.parametrize("cls", [Reading, ReadingStruct, ReadingModel])
def test_encode_refuses_what_would_not_read_back(cls: type, fields: dict[str, Any], reason: str) -> None:
    inner = {Reading: Inner, ReadingStruct: InnerStruct, ReadingModel: InnerModel}[cls]
    if fields.get("inner") == "nan":
        fields = {"inner": inner(nan) if cls is not ReadingModel else inner(x=nan)}
    event = cls(**fields)
    with pytest.raises(InvalidEvent) as caught:
        readings.encode(event)
    assert str(caught.value) == f"invalid event: cannot encode {cls.__name__!r}: {reason}"
    assert (caught.value.stream, caught.value.index) == ("", 0)
    # The same event with the bad value taken out encodes and reads back equal.
    assert readings.decode_data(record(readings.encode(cls()))) == cls()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (Deposited(1.5), "it would not decode: ValidationError: Expected `int`, got `float` - at `$.amount`"),  # type: ignore[arg-type]
        (Deposited(True), "it would not decode: ValidationError: Expected `int`, got `bool` - at `$.amount`"),
        (Deposited(nan), f"$.amount is nan, {NO_NAN}"),  # type: ignore[arg-type]
        (Deposited("7"), "it would not decode: ValidationError: Expected `int`, got `str` - at `$.amount`"),  # type: ignore[arg-type]
        (Reading(value=2**63 + 1), "$.value would decode as 9.223372036854776e+18, not 9223372036854775809"),
        (Reading(value=10**400), "it would not decode: ValidationError: Number out of range - at `$.value`"),
        (ReadingStruct(value=10**400), "it would not decode: ValidationError: Number out of range - at `$.value`"),
        (
            Deposited(10**5000),
            "$.amount: ValueError: Exceeds the limit (4300 digits) for integer string conversion; "
            "use sys.set_int_max_str_digits() to increase the limit",
        ),
    ],
    ids=[
        "float in int",
        "bool in int",
        "nan in int",
        "str in int",
        "int in float",
        "int beyond float",
        "struct",
        "5000 digits",
    ],
)
def test_encode_refuses_numbers_the_decoder_would_not_give_back(event: object, reason: str) -> None:
    both: Codec[object] = Codec([Deposited, Reading, ReadingStruct])
    with pytest.raises(InvalidEvent) as caught:
        both.encode(event)
    assert str(caught.value) == f"invalid event: cannot encode {type(event).__name__!r}: {reason}"


def test_ints_the_decoder_gives_back_are_kept() -> None:
    """msgspec and pydantic decode ints of up to 4300 digits exactly (2**63, 2**64, 2**100 included)."""

    class Big(pydantic.BaseModel):
        n: int

    big: Codec[Deposited | Big] = Codec([Deposited, Big])
    for n in [2**63 - 1, 2**63, 2**64, 2**100, -(2**100), 10**4299]:
        for event in (Deposited(n), Big(n=n)):
            assert big.decode_data(record(big.encode(event, {"n": n}))) == event
            assert big.decode(record(big.encode(event, {"n": n}))).metadata == {"n": n}


def test_ints_beyond_the_decoders_limit_are_refused() -> None:
    """With Python's digit limit lifted the encoder writes any int, but the decoder stops at 4300 digits."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(InvalidEvent) as caught:
            codec.encode(Deposited(10**5000))
        assert str(caught.value) == (
            "invalid event: cannot encode 'Deposited': "
            "it would not decode: ValidationError: Integer value out of range - at `$.amount`"
        )
        with pytest.raises(InvalidEvent) as caught:
            codec.encode(Deposited(1), {"n": 10**5000})
        assert str(caught.value) == (
            "invalid event: cannot encode 'Deposited': "
            "metadata $: ValidationError: Integer value out of range - at `$[...]`"
        )
    finally:
        sys.set_int_max_str_digits(limit)


class Bounded(msgspec.Struct):
    n: Annotated[int, msgspec.Meta(ge=0)]


@dataclasses.dataclass
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("n must be >= 0")


class Doubled(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    n: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def twice(self) -> int:
        return 2 * self.n


class Blob(pydantic.BaseModel):
    name: str
    parts: list[bytes]


class Secretive(pydantic.BaseModel):
    n: int
    note: str = pydantic.Field(default="", exclude=True)


def test_encode_refuses_what_the_classes_own_checks_would_refuse() -> None:
    """Constraints, __post_init__ checks and pydantic configurations the decoder applies, not the constructor."""
    checked = Checked(1)
    checked.n = -1  # a mutable dataclass: nothing checks the assignment
    strict: Codec[object] = Codec([Bounded, Checked, Doubled, Secretive, Blob])
    cases: list[tuple[object, str]] = [
        (Bounded(-1), "it would not decode: ValidationError: Expected `int` >= 0 - at `$.n`"),
        (checked, "it would not decode: ValidationError: n must be >= 0"),
        (Doubled(n=1), "it would not decode: ValidationError: $.twice: Extra inputs are not permitted"),
        (Secretive(n=1, note="x"), "$.note would decode as '', not 'x'"),
        (
            Blob(name="a", parts=[b"ok", b"\xff\xfe"]),
            "$.parts[1] holds bytes that are not UTF-8 (b'\\xff\\xfe'), which pydantic writes as text",
        ),
    ]
    for event, reason in cases:
        with pytest.raises(InvalidEvent) as caught:
            strict.encode(event)
        assert str(caught.value) == f"invalid event: cannot encode {type(event).__name__!r}: {reason}"
    assert strict.decode_data(record(strict.encode(Secretive(n=1)))) == Secretive(n=1)


def test_equality_is_field_by_field_when_the_class_has_none() -> None:
    """An ``eq=False`` class compares by identity; its fields decide. Decimal("NaN") reads back as written."""

    @dataclasses.dataclass(eq=False)
    class Plain:
        n: int
        price: Decimal

    @dataclasses.dataclass(frozen=True)
    class Priced:
        price: Decimal

    plain: Codec[object] = Codec([Plain, Priced])
    decoded = plain.decode_data(record(plain.encode(Plain(1, Decimal("1.10")))))
    assert isinstance(decoded, Plain)
    assert (decoded.n, str(decoded.price)) == (1, "1.10")
    nan = plain.decode_data(record(plain.encode(Priced(Decimal("NaN")))))
    assert isinstance(nan, Priced)
    assert str(nan.price) == "NaN"
    with pytest.raises(InvalidEvent) as caught:
        plain.encode(Plain(1.5, Decimal(1)))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "invalid event: cannot encode 'Plain': it would not decode: ValidationError: Expected `int`, got `float` - at `$.n`"
    )


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"x": nan}, f"$['x'] is nan, {NO_NAN}"),
        ({"x": [1, inf]}, f"$['x'][1] is inf, {NO_NAN}"),
        ({"x": {"y": -inf}}, f"$['x']['y'] is -inf, {NO_NAN}"),
        ({1: "a"}, "$ has the key 1, not a str (JSON object keys are strings)"),
        ({"x": {2.5: "a"}}, "$['x'] has the key 2.5, not a str (JSON object keys are strings)"),
        ({"who": "\ud800"}, "$['who'] holds a lone surrogate ('\\ud800'), which UTF-8 cannot encode"),
        ({"\ud800": 1}, "$ has the key '\\ud800', a lone surrogate that UTF-8 cannot encode"),
        ({"x": object()}, "$['x']: TypeError: Encoding objects of type object is unsupported"),
        ({(1, 2): 1}, "$ has the key (1, 2): TypeError: Only dicts with str-like or number-like keys are supported"),
        (
            {"x": 10**5000},
            "$['x']: ValueError: Exceeds the limit (4300 digits) for integer string conversion; "
            "use sys.set_int_max_str_digits() to increase the limit",
        ),
    ],
    ids=lambda value: short(value) if isinstance(value, dict) else None,
)
def test_encode_refuses_metadata_that_would_not_read_back(metadata: dict[Any, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        codec.encode(Deposited(1), metadata)
    assert str(caught.value) == f"invalid event: cannot encode 'Deposited': metadata {reason}"


def test_metadata_goes_through_the_json_mapping() -> None:
    """UUIDs, datetimes, Decimals and tuples become their JSON form, as msgspec writes them; big ints stay."""
    some_id = UUID("12345678-1234-5678-1234-567812345678")
    metadata = {"id": some_id, "at": NOW, "price": Decimal("1.10"), "tags": ("a", "b"), "big": 2**100, "none": None}
    envelope = codec.decode(record(codec.encode(Deposited(1), metadata)))
    assert envelope.metadata == {
        "id": "12345678-1234-5678-1234-567812345678",
        "at": "2024-05-01T12:00:00Z",
        "price": "1.10",
        "tags": ["a", "b"],
        "big": 2**100,
        "none": None,
    }
    with pytest.raises(InvalidEvent) as caught:
        codec.encode(Deposited(1), [1])  # type: ignore[arg-type]
    assert str(caught.value) == (
        "invalid event: cannot encode 'Deposited': "
        "metadata: TypeError: cannot convert dictionary update sequence element #0 to a sequence"
    )


def test_refusals_chain_the_encoders_error() -> None:
    with pytest.raises(InvalidEvent) as caught:
        codec.encode(Opened("\ud800"))
    assert str(caught.value) == (
        "invalid event: cannot encode 'Opened': $.owner holds a lone surrogate ('\\ud800'), which UTF-8 cannot encode"
    )
    assert isinstance(caught.value.__cause__, UnicodeEncodeError)
    with pytest.raises(InvalidEvent) as caught:
        codec.encode(Deposited(1.5))  # type: ignore[arg-type]
    assert isinstance(caught.value.__cause__, msgspec.ValidationError)
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args


def test_cycles_and_deep_nesting_are_refused_not_raised() -> None:
    loop: list[Any] = []
    loop.append(loop)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (loop, deep):
        with pytest.raises(InvalidEvent) as caught:
            readings.encode(Reading(extra=value))
        assert str(caught.value) == (
            "invalid event: cannot encode 'Reading': "
            "RecursionError: maximum recursion depth exceeded while serializing an object"
        )
        with pytest.raises(InvalidEvent) as caught:
            codec.encode(Deposited(1), {"x": value})
        assert str(caught.value) == (
            "invalid event: cannot encode 'Deposited': "
            "metadata $: RecursionError: maximum recursion depth exceeded while serializing an object"
        )


# Hostile stored bytes (guarantee 8): a DecodeError naming stream, version and type, never a raw exception.

MALFORMED = "DecodeError: JSON is malformed"
DEEP = "RecursionError: maximum recursion depth exceeded while deserializing an object"
BAD_UTF8 = "UnicodeDecodeError: invalid UTF-8 in a JSON string"
HOSTILE_DATA = [
    (b'{"owner": NaN}', f"{MALFORMED}: invalid character (byte 10)"),
    (b'{"owner": -Infinity}', f"{MALFORMED}: invalid character (byte 11)"),
    (b'{"owner": 1e999}', "ValidationError: Number out of range - at `$.owner`"),
    (b'{"owner": "\xff\xfe"}', f"{BAD_UTF8} (invalid start byte)"),
    (b'{"owner": "\xed\xa0\x80"}', f"{BAD_UTF8} (invalid continuation byte)"),  # an encoded surrogate
    (b'{"owner": "\\ud800"}', "DecodeError: Input data was truncated"),  # an escaped lone surrogate
    (b'{"owner": "\x00"}', f"{MALFORMED}: invalid character (byte 11)"),
    (_deep(10_000, "dict"), DEEP),
    (_deep(10_000, "list"), "ValidationError: Expected `object`, got `array`"),
    (b"[]", "ValidationError: Expected `object`, got `array`"),
    (b"1", "ValidationError: Expected `object`, got `int`"),
    (b'"text"', "ValidationError: Expected `object`, got `str`"),
    (b"null", "ValidationError: Expected `object`, got `null`"),
    (b"\x00", f"{MALFORMED}: invalid character (byte 0)"),
    (b"\xff", f"{MALFORMED}: invalid character (byte 0)"),
    (b"\xef\xbb\xbf{}", f"{MALFORMED}: invalid character (byte 0)"),  # a byte order mark
    (b"{", "DecodeError: Input data was truncated"),
    (b'{"owner": "a",}', f"{MALFORMED}: trailing comma in object (byte 14)"),
    (b'{"owner": "a"} trailing', f"{MALFORMED}: trailing characters (byte 16)"),
    (b"", "DecodeError: Input data was truncated"),
]


@pytest.mark.parametrize(("stored", "reason"), HOSTILE_DATA, ids=short)
def test_hostile_data_raises_decode_error(stored: bytes, reason: str) -> None:
    for decode in (codec.decode, codec.decode_data):
        with pytest.raises(DecodeError) as caught:
            decode(raw("Opened", stored))
        assert type(caught.value) is DecodeError
        assert str(caught.value) == f"account-1: cannot decode event 'Opened' at version 0: {reason}"


@pytest.mark.parametrize(("stored", "reason"), HOSTILE_DATA, ids=short)
def test_hostile_data_to_upcast_raises_decode_error(stored: bytes, reason: str) -> None:
    """Data read as a plain object for an upcaster: the same errors, before any upcaster runs."""
    if stored == b'{"owner": 1e999}':  # a plain object: msgspec names no field, only "a value"
        reason = "ValidationError: Number out of range - at `$[...]`"
    for decode in (upcasting.decode, upcasting.decode_data):
        with pytest.raises(DecodeError) as caught:
            decode(raw("Credited", stored))
        assert type(caught.value) is DecodeError
        assert str(caught.value) == f"account-1: cannot decode event 'Credited' at version 0: {reason}"
        assert caught.value.__cause__ is not None


@pytest.mark.parametrize(
    ("metadata", "decode_reason", "decode_data_reason"),
    [
        (_deep(10_000, "dict"), f"bad metadata: {DEEP}", f"bad metadata: {DEEP}"),
        (_deep(10_000, "list"), "bad metadata: ValidationError: Expected `object`, got `array`", "same"),
        (b'{"a": NaN}', f"bad metadata: {MALFORMED}: invalid character (byte 6)", "same"),
        (b'{"a": Infinity}', f"bad metadata: {MALFORMED}: invalid character (byte 6)", "same"),
        (b"[]", "bad metadata: ValidationError: Expected `object`, got `array`", "same"),
        (b"null", "bad metadata: ValidationError: Expected `object`, got `null`", "same"),
        (b"\x00", f"bad metadata: {MALFORMED}: invalid character (byte 0)", "same"),
        (b"{", "bad metadata: DecodeError: Input data was truncated", "same"),
        (b'{"a": "\\ud800"}', "bad metadata: DecodeError: Input data was truncated", "same"),
        # decode_data reads only $event_version: what it skips is not checked (the folding fast path).
        (b'{"a": 1e999}', "bad metadata: ValidationError: Number out of range - at `$[...]`", None),
        (b'{"a": "\xff\xfe"}', f"bad metadata: {BAD_UTF8} (invalid start byte)", None),
        (b'{"a": "\xed\xa0\x80"}', f"bad metadata: {BAD_UTF8} (invalid continuation byte)", None),
        (
            b'{"$event_version": 0}',
            "bad $event_version 0",
            "bad metadata: ValidationError: Expected `int` >= 1 - at `$.$event_version`",
        ),
        (
            b'{"$event_version": true}',
            "bad $event_version True",
            "bad metadata: ValidationError: Expected `int`, got `bool` - at `$.$event_version`",
        ),
        (
            b'{"$event_version": ' + str(2**100).encode() + b"}",
            f"version {2**100} is newer than Opened (version 1)",
            "same",
        ),
    ],
    ids=lambda value: short(value) if isinstance(value, bytes) else None,
)
def test_hostile_metadata_raises_decode_error(
    metadata: bytes, decode_reason: str, decode_data_reason: str | None
) -> None:
    stored = raw("Opened", b'{"owner": "ada"}', metadata)
    for decode, reason in ((codec.decode, decode_reason), (codec.decode_data, decode_data_reason)):
        if reason is None:
            assert decode(stored) in (Opened("ada"), codec.decode(raw("Opened", b'{"owner": "ada"}')))
            continue
        with pytest.raises(DecodeError) as caught:
            decode(stored)
        assert type(caught.value) is DecodeError
        expected = decode_reason if reason == "same" else reason
        assert str(caught.value) == f"account-1: cannot decode event 'Opened' at version 0: {expected}"


@pytest.mark.parametrize("metadata", [3, 2.5, ["x"]], ids=repr)
def test_metadata_that_is_not_bytes_raises_decode_error(metadata: Any) -> None:
    """A store's row edited by hand (SQLite keeps any value in any column): a DecodeError naming the event,
    not a bare TypeError, from both decoders."""
    stored = msgspec.structs.replace(raw("Opened", b'{"owner": "ada"}'), metadata=metadata)
    reason = f"bad metadata: TypeError: a bytes-like object is required, not '{type(metadata).__name__}'"
    for decode in (codec.decode, codec.decode_data):
        with pytest.raises(DecodeError) as caught:
            decode(stored)
        assert type(caught.value) is DecodeError
        assert str(caught.value) == f"account-1: cannot decode event 'Opened' at version 0: {reason}"


@pytest.mark.parametrize("data", [7, 2.5, None], ids=repr)
def test_data_that_is_not_bytes_raises_decode_error(data: Any) -> None:
    """The same for the data, read as a plain object on the way to an upcaster or as the class."""
    reason = f"TypeError: a bytes-like object is required, not '{type(data).__name__}'"
    for decoder, type_name in ((upcasting, "Credited"), (codec, "Opened")):
        stored = msgspec.structs.replace(raw(type_name, b"{}"), data=data)
        for decode in (decoder.decode, decoder.decode_data):
            with pytest.raises(DecodeError) as caught:
                decode(stored)
            assert type(caught.value) is DecodeError
            assert str(caught.value) == f"account-1: cannot decode event {type_name!r} at version 0: {reason}"


def test_valid_json_oddities_decode() -> None:
    """An escaped NUL in a string and ints beyond 64 bits are JSON: they decode."""
    assert codec.decode_data(raw("Opened", b'{"owner": "\\u0000"}')) == Opened("\x00")
    meta = b'{"n": ' + str(2**100).encode() + b', "z": "\\u0000"}'
    assert codec.decode(raw("Opened", b'{"owner": "a"}', meta)).metadata == {"n": 2**100, "z": "\x00"}


def test_upcaster_failures_name_the_type_and_versions() -> None:
    class DepositedV2(msgspec.Struct):
        event_type: ClassVar[str] = "Deposited"
        event_version: ClassVar[int] = 2
        cents: int

    def explode(data: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("no cents today")

    prefix = "account-1: cannot decode event 'Deposited' at version 0: upcaster ('Deposited', 1)"
    # Upcasters that break their contract on purpose: typed as what they return.
    cases: list[tuple[Callable[[dict[str, Any]], object], str, type[BaseException] | None]] = [
        (explode, f"{prefix} failed: ZeroDivisionError: no cents today", ZeroDivisionError),
        (lambda data: [data], f"{prefix} returned [{{'amount': 1}}], not a dict or a (type name, dict) pair", None),
        (lambda data: None, f"{prefix} returned None, not a dict or a (type name, dict) pair", None),
        (
            lambda data: ("Deposited", ["x" * 100]),
            f"{prefix} returned ('Deposited', ['{'x' * 41}..., not a dict or a (type name, dict) pair",
            None,
        ),
        (
            lambda data: (7, data),
            f"{prefix} returned (7, {{'amount': 1}}), not a dict or a (type name, dict) pair",
            None,
        ),
        (
            lambda data: {"cents": float("nan")},
            "account-1: cannot decode event 'Deposited' at version 0: after upcasting to version 2: "
            "ValidationError: Expected `int`, got `null` - at `$.cents`",
            msgspec.ValidationError,
        ),
    ]
    for upcaster, message, cause in cases:
        broken = Codec([DepositedV2], {("Deposited", 1): cast(Upcaster, upcaster)})
        for decode in (broken.decode, broken.decode_data):
            with pytest.raises(DecodeError) as caught:
                decode(raw("Deposited", b'{"amount": 1}'))
            assert type(caught.value) is DecodeError
            assert str(caught.value) == message
            if cause is None:
                assert caught.value.__cause__ is None
            else:
                assert isinstance(caught.value.__cause__, cause)


# -- encoding a batch: ids from one urandom call, metadata once per schema version -------------------


@pytest.mark.parametrize("count", [0, 1, 2, 15, 16, 65_535, 65_536])
def test_uuid4s_are_distinct_version_4_uuids(count: int) -> None:
    # The msgpack header changes at 16 (fixarray to array16) and at 65,536 (array32).
    ids = uuid4s(count)
    assert len(ids) == len(set(ids)) == count
    assert {type(i) for i in ids} <= {UUID}
    assert {(i.version, i.variant) for i in ids} <= {(4, RFC_4122)}
    assert all(i == UUID(str(i)) for i in ids[:100])


def test_uuid4s_leave_the_other_bits_random() -> None:
    ids = uuid4s(2_000)
    # Of the 128 bits only the 4 version and 2 variant bits are fixed: every other bit takes both values.
    fixed = (0xF << 76) | (0x3 << 62)
    ones = zeros = 0
    for i in ids:
        ones |= i.int
        zeros |= ~i.int
    assert (ones & zeros) & ((1 << 128) - 1) == ((1 << 128) - 1) & ~fixed


def test_encode_events_writes_what_encode_writes() -> None:
    meta = {"$correlation_id": "c-1", "user": "ada", "nested": {"a": [1, 2]}}
    events: list[Any] = [Opened("ada"), Deposited(5), Renamed(first="Ada", lastName="L"), Deposited(7)]
    batch = encode_events(codec, events, meta)
    one_by_one = [codec.encode(e, metadata=meta) for e in events]
    assert [(e.type, e.data, e.metadata) for e in batch] == [(e.type, e.data, e.metadata) for e in one_by_one]
    assert batch[2].metadata == b'{"$correlation_id":"c-1","user":"ada","nested":{"a":[1,2]},"$event_version":2}'
    assert batch[0].metadata is batch[1].metadata is batch[3].metadata  # encoded once for version 1
    assert len({e.id for e in batch}) == 4
    assert {(e.id.version, e.id.variant) for e in batch} == {(4, RFC_4122)}
    given = [uuid4() for _ in events]
    assert [e.id for e in encode_events(codec, events, meta, given)] == given
    assert [codec.decode_data(record(e)) for e in batch] == events


def test_encode_events_names_the_index_it_refuses() -> None:
    events: list[Any] = [Deposited(1), Deposited(2), Deposited(cast(int, nan)), Deposited(4)]
    with pytest.raises(InvalidEvent) as caught:
        encode_events(codec, events, None)
    assert str(caught.value) == f"invalid event: cannot encode 'Deposited': $.amount is nan, {NO_NAN}"
    assert (caught.value.stream, caught.value.index) == ("", 2)
    with pytest.raises(InvalidEvent) as unknown:
        encode_events(cast(Codec[object], codec), [Deposited(1), object()], None)
    assert str(unknown.value) == "invalid event: object is not registered with the codec"
    assert unknown.value.index == 1
    with pytest.raises(InvalidEvent) as bad_meta:
        encode_events(codec, [Deposited(1), Deposited(2)], {"x": float("inf")})
    assert str(bad_meta.value) == f"invalid event: cannot encode 'Deposited': metadata $['x'] is inf, {NO_NAN}"
    assert bad_meta.value.index == 0


def test_encode_events_calls_any_codecs_encode_with_the_ids() -> None:
    calls: list[tuple[object, object, object]] = []

    class Plain:
        event_types = frozenset({"Deposited"})

        def encode(self, event: Any, metadata: Any = None, id: UUID | None = None) -> NewEvent:
            calls.append((event, metadata, id))
            if event == Deposited(3):
                raise InvalidEvent("", 0, "three is refused")
            return NewEvent("Deposited", b"{}", b"", id or uuid4())

        def decode(self, recorded: RecordedEvent) -> Any:
            raise NotImplementedError

        def decode_data(self, recorded: RecordedEvent) -> Any:
            raise NotImplementedError

    ids = [uuid4(), uuid4()]
    written = encode_events(Plain(), [Deposited(1), Deposited(2)], {"m": 1}, ids)
    assert [e.id for e in written] == ids
    assert calls == [(Deposited(1), {"m": 1}, ids[0]), (Deposited(2), {"m": 1}, ids[1])]
    calls.clear()
    assert len(encode_events(Plain(), [Deposited(1)], None)) == 1
    assert calls == [(Deposited(1), None, None)]  # its own ids when none are given, as before
    with pytest.raises(InvalidEvent) as caught:
        encode_events(Plain(), [Deposited(1), Deposited(3)], None)
    assert (str(caught.value), caught.value.index) == ("invalid event: three is refused", 1)


# -- decode_data reads an append's shared metadata once; NewEvent ids come from a pool ------------------


def test_decode_data_reads_each_records_own_metadata() -> None:
    """The last metadata read is remembered (the events of one append share theirs): equal bytes give its
    version, other bytes are read, whatever the order, and bad metadata still raises."""
    v1 = raw("Deposited", b'{"amount": 2}', b'{"$correlation_id": "c"}')
    v2 = raw("Deposited", b'{"cents": 5}', b'{"$event_version": 2}')
    v3 = record(upcasting.encode(DepositedV3(7, "USD"), {"$correlation_id": "c"}))
    copy_of_v2 = raw("Deposited", b'{"cents": 6}', b'{"$event_version": ' + b"2}")  # equal bytes, another object
    expected = {id(v1): DepositedV3(200, "EUR"), id(v2): DepositedV3(5, "EUR"), id(v3): DepositedV3(7, "USD")}
    expected[id(copy_of_v2)] = DepositedV3(6, "EUR")
    for recorded in [v1, v2, v2, copy_of_v2, v3, v3, v1, v2, v3, v1, v1]:
        assert upcasting.decode_data(recorded) == expected[id(recorded)]
    bad = raw("Deposited", b'{"cents": 5}', b'{"$event_version": 2')
    upcasting.decode_data(v2)
    with pytest.raises(DecodeError) as caught:
        upcasting.decode_data(bad)
    assert str(caught.value) == (
        "account-1: cannot decode event 'Deposited' at version 0: bad metadata: DecodeError: Input data was truncated"
    )
    assert upcasting.decode_data(v2) == DepositedV3(5, "EUR")


def test_decode_data_from_many_threads_reads_each_records_version() -> None:
    records = [
        raw("Deposited", b'{"amount": 1}', b'{"k": "v"}'),
        raw("Deposited", b'{"cents": 5}', b'{"$event_version": 2}'),
        record(upcasting.encode(DepositedV3(7, "USD"))),
    ]
    expected = [DepositedV3(100, "EUR"), DepositedV3(5, "EUR"), DepositedV3(7, "USD")]

    def decode_all(offset: int) -> bool:
        return all(upcasting.decode_data(records[(i + offset) % 3]) == expected[(i + offset) % 3] for i in range(3_000))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(decode_all, range(8))) == [True] * 8


def test_records_are_left_out_of_the_garbage_collector() -> None:
    """Their fields never form a cycle; untracked, a big batch costs the collector nothing."""
    assert not gc.is_tracked(NewEvent("T", b"", tags=("a",)))
    assert not gc.is_tracked(record(NewEvent("T", b"")))


def test_new_event_ids_are_fresh_version_4_uuids_across_refills() -> None:
    ids = [NewEvent("T", b"").id for _ in range(1_000)]  # several refills of the pool
    assert len(set(ids)) == 1_000
    assert {(type(i), i.version, i.variant) for i in ids} == {(UUID, 4, RFC_4122)}


def test_new_event_ids_from_many_threads_are_distinct() -> None:
    def ids(_: int) -> list[UUID]:
        return [NewEvent("T", b"").id for _ in range(2_000)]

    with ThreadPoolExecutor(8) as pool:
        found = [i for batch in pool.map(ids, range(8)) for i in batch]
    assert len(set(found)) == len(found) == 16_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_never_takes_the_parents_pooled_ids() -> None:
    NewEvent("T", b"")  # the pool now holds ids this process has not handed out
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads alive (3.12+)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        try:
            os.write(write, b"".join(NewEvent("T", b"").id.bytes for _ in range(100)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        raw_ids = pipe.read()
    os.waitpid(child, 0)
    childs = {UUID(bytes=raw_ids[i : i + 16]) for i in range(0, len(raw_ids), 16)}
    parents = {NewEvent("T", b"").id for _ in range(100)}
    assert len(childs) == 100
    assert not childs & parents


def test_encode_checks_metadata_the_cache_cannot_vouch_for() -> None:
    """The last plain metadata is remembered with its encoding; equal-looking metadata of other types (True
    for 1, a float) and other schema versions are encoded and checked anew."""
    opened = Opened("ada")
    assert codec.encode(opened, {"n": 1}).metadata == b'{"n":1}'
    assert codec.encode(opened, {"n": 1}).metadata == b'{"n":1}'
    assert codec.encode(opened, {"n": True}).metadata == b'{"n":true}'
    assert codec.encode(opened, {"n": 1.0}).metadata == b'{"n":1.0}'
    assert codec.encode(opened, {"n": 1}).metadata == b'{"n":1}'
    assert upcasting.encode(DepositedV3(1, "EUR"), {"n": 1}).metadata == b'{"n":1,"$event_version":3}'
    with pytest.raises(InvalidEvent) as caught:
        codec.encode(opened, {"n": float("nan")})
    assert (
        str(caught.value)
        == "invalid event: cannot encode 'Opened': metadata $['n'] is nan, and JSON has no NaN or infinity"
    )
