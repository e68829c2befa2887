"""The codec derives tags (DESIGN §8): a class's ``event_tags`` templates and ``Codec(..., tags=fn)``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar
from uuid import UUID

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epoch import Codec, ConfigurationError, InvalidEvent
from epoch.codec import encode_events
from epoch.queries import Query, QueryItem
from epoch.stores.memory import MemoryEventStore
from epoch.testing import collect
from tests.hostile import any_text, is_valid_name

ADA = UUID(int=42)


@dataclasses.dataclass(frozen=True)
class Registered:
    event_tags: ClassVar[tuple[str, ...]] = ("user:{user_id}", "username:{username}")
    user_id: UUID
    username: str


class Renamed(msgspec.Struct, frozen=True):
    event_tags: ClassVar[tuple[str, ...]] = ("user:{user_id}", "username:{new}", "username:{old}")
    user_id: UUID
    old: str
    new: str


class Scored(pydantic.BaseModel):
    event_tags: ClassVar[tuple[str, ...]] = ("score:{points:03d}",)
    points: int


@dataclasses.dataclass(frozen=True)
class Noted:
    text: str


def test_class_templates() -> None:
    codec: Codec[Any] = Codec([Registered, Renamed, Scored, Noted])
    assert codec.encode(Registered(ADA, "ada")).tags == (f"user:{ADA}", "username:ada")
    assert codec.encode(Renamed(ADA, "ada", "lovelace")).tags == (f"user:{ADA}", "username:lovelace", "username:ada")
    assert codec.encode(Renamed(ADA, "ada", "ada")).tags == (f"user:{ADA}", "username:ada")  # de-duplicated
    assert codec.encode(Scored(points=7)).tags == ("score:007",)
    assert codec.encode(Noted("hi")).tags == ()


def test_a_function_and_templates_combined() -> None:
    def tags(event: Any) -> list[str]:
        return ["kind:" + type(event).__name__, f"user:{ADA}"] if not isinstance(event, Noted) else []

    codec: Codec[Any] = Codec([Registered, Noted], tags=tags)
    assert codec.encode(Registered(ADA, "ada")).tags == (f"user:{ADA}", "username:ada", "kind:Registered")
    assert codec.encode(Noted("hi")).tags == ()
    only: Codec[Noted] = Codec([Noted], tags=lambda event: (f"text:{event.text}",))
    assert only.encode(Noted("hi")).tags == ("text:hi",)


def test_the_batch_encoder_tags_each_event() -> None:
    codec: Codec[Any] = Codec([Registered, Noted], tags=lambda event: ("all",))
    ids = [UUID(int=1), UUID(int=2), UUID(int=3)]
    events = [Registered(ADA, "ada"), Noted("x"), Registered(ADA, "bob")]
    encoded = encode_events(codec, events, {"who": "me"}, ids)
    assert [(e.id, e.tags) for e in encoded] == [
        (ids[0], (f"user:{ADA}", "username:ada", "all")),
        (ids[1], ("all",)),
        (ids[2], (f"user:{ADA}", "username:bob", "all")),
    ]
    assert encoded[0].metadata == b'{"who":"me"}'


def test_without_tags_encoding_is_unchanged() -> None:
    codec: Codec[Noted] = Codec([Noted])
    assert codec._tagger is None  # nothing more runs on encode
    event = codec.encode(Noted("hi"), id=ADA)
    assert (event.type, event.data, event.metadata, event.id, event.tags) == ("Noted", b'{"text":"hi"}', b"", ADA, ())


async def test_tags_reach_the_store_and_the_envelope() -> None:
    codec: Codec[Any] = Codec([Registered, Noted])
    async with MemoryEventStore() as store:
        await store.append("users-42", [codec.encode(Registered(ADA, "ada")), codec.encode(Noted("x"))])
        [found] = await collect(store.read_query(Query([QueryItem(tags=("username:ada",))])))
        envelope = codec.decode(found)
        assert (envelope.data, envelope.tags) == (Registered(ADA, "ada"), (f"user:{ADA}", "username:ada"))


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (("user:{nobody}",), "Bad.event_tags: 'user:{nobody}' names 'nobody', which is not a field of the class"),
        (
            ("user:{name.upper}",),
            "Bad.event_tags: 'user:{name.upper}' names 'name.upper', which is not a field of the class",
        ),
        (("user:{",), "Bad.event_tags: 'user:{' is not a template: Single '{' encountered in format string"),
        (("user:{}",), "Bad.event_tags: 'user:{}' names '', which is not a field of the class"),
        ("user:{name}", "Bad.event_tags must be a tuple of str templates, not 'user:{name}'"),
        ((42,), "Bad.event_tags holds 42, not a str template"),
    ],
)
def test_bad_templates_are_refused_when_the_codec_is_built(templates: Any, message: str) -> None:
    bad = dataclasses.make_dataclass("Bad", [("name", str)], namespace={"event_tags": templates})
    with pytest.raises(ConfigurationError) as info:
        Codec([bad])
    assert str(info.value) == message


def test_tags_must_be_a_function() -> None:
    with pytest.raises(ConfigurationError) as info:
        Codec([Noted], tags=("a", "b"))  # type: ignore[arg-type]
    assert str(info.value) == "tags must be a function from an event to its tags, not ('a', 'b')"


@pytest.mark.parametrize(
    ("tags", "reason", "index"),
    [
        (
            lambda event: "str",
            "cannot tag 'Noted': TypeError: the tags function returned str, not an iterable of str",
            0,
        ),
        (
            lambda event: None,
            "cannot tag 'Noted': TypeError: the tags function returned NoneType, not an iterable of str",
            0,
        ),
        (lambda event: 1 / 0, "cannot tag 'Noted': ZeroDivisionError: division by zero", 0),
        (lambda event: [event.text], "cannot tag 'Noted': tag ' padded' has leading or trailing whitespace", 1),
        (lambda event: ["ok", 7], "cannot tag 'Noted': tag 7 must be a str, not int", 0),
    ],
)
def test_bad_tags_are_invalid_events(tags: Any, reason: str, index: int) -> None:
    codec: Codec[Noted] = Codec([Noted], tags=tags)
    with pytest.raises(InvalidEvent) as info:
        codec.encode(Noted(" padded"))
    assert (info.value.index, info.value.reason) == (0, reason)
    with pytest.raises(InvalidEvent) as batch:
        encode_events(codec, [Noted("fine-"), Noted(" padded")], None)
    assert batch.value.index == index  # the first event the batch encoder could not tag
    assert str(batch.value) == f"invalid event: {reason}"


def test_a_template_filled_with_a_bad_value() -> None:
    codec: Codec[Registered] = Codec([Registered])
    with pytest.raises(InvalidEvent) as info:
        codec.encode(Registered(ADA, "a\nb"))
    assert info.value.reason == "cannot tag 'Registered': tag 'username:a\\nb' contains a control character"


@given(st.lists(any_text, max_size=5))
def test_hostile_tags_are_valid_or_refused(values: list[str]) -> None:
    codec: Codec[Noted] = Codec([Noted], tags=lambda event: values)
    if all(is_valid_name(value, 256) for value in values):
        assert codec.encode(Noted("x")).tags == tuple(dict.fromkeys(values))
    else:
        with pytest.raises(InvalidEvent):
            codec.encode(Noted("x"))
