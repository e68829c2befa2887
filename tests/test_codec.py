"""The JSON codec: event classes of three kinds, schema versions, upcasting, and loud failures."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import Codec, ConfigurationError, DecodeError, InvalidEvent, NewEvent, RecordedEvent, UnknownEventType
from epoch.codec import Upcaster, event_type_of, event_version_of
from tests.bank import AccountEvent, Closed, Deposited, Opened, Withdrawn

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def record(event: NewEvent, stream: str = "account-1", version: int = 0) -> RecordedEvent:
    """What a store would hand back for ``event``."""
    return RecordedEvent(stream, version, version + 1, event.id, event.type, event.data, event.metadata, NOW)


def raw(type: str, data: bytes, metadata: bytes = b"") -> RecordedEvent:
    return record(NewEvent(type, data, metadata))


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

    with pytest.raises(InvalidEvent, match="Stranger is not registered"):
        codec.encode(Stranger(1))  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="cannot encode 'Opened'"):
        codec.encode(Opened(object()))  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="cannot encode 'Opened'"):
        codec.encode(Opened("ada"), {"x": object()})


def test_configuration_errors() -> None:
    @dataclasses.dataclass
    class Opened:  # same name as bank.Opened
        owner: str

    with pytest.raises(ConfigurationError, match="share the event type 'Opened'"):
        Codec([bank_opened(), Opened])
    with pytest.raises(ConfigurationError, match="must be classes"):
        Codec([Opened("x")])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must be a dataclass"):
        Codec([int])

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
    with pytest.raises(ConfigurationError, match="never runs"):
        Codec([Deposited], {("Deposited", 1): upcast})


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
        with pytest.raises(UnknownEventType, match="'Robbed'"):
            decode(raw("Robbed", b"{}"))


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
    with pytest.raises(DecodeError, match="Expected `object`"):
        broken.decode(raw("Deposited", b"[]"))


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
