"""Personal data in the codec and the key cache (what the contract cannot say): the three kinds of event
class, defaults, upcasting, configuration errors, a stale cache, sagas, hostile values and subjects."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
import pydantic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from epoch import (
    Codec,
    CommandHandler,
    ConfigurationError,
    DecodeError,
    InvalidEvent,
    KeyNotLoaded,
    KeyStore,
    NewEvent,
    Personal,
    RecordedEvent,
    Saga,
    SagaRunner,
)
from epoch.personal import keystore
from epoch.stores import SupportsKeys, keys_of, open_store
from epoch.stores.memory import MemoryEventStore
from epoch.testing import collect
from epoch.testing._personal_domain import Profile, Register, Registered, Rename, personal_codec, profiles
from tests.held_keys import HeldKeys
from tests.hostile import any_text, hostile_names, is_valid_name


class StructSignedUp(msgspec.Struct, frozen=True, rename="camel"):
    user_id: int
    email_address: Annotated[str, Personal(subject="user_id")]
    tags: Annotated[list[str], Personal(subject="user_id")] = msgspec.field(default_factory=lambda: ["none"])


class PydanticSignedUp(pydantic.BaseModel):
    user: str = pydantic.Field(alias="u")
    phone: Annotated[str | None, Personal(subject="user")] = None


@dataclass(frozen=True)
class Moved:
    event_version = 2
    user_id: str
    address: Annotated[str, Personal(subject="user_id")]


async def _store_with_keys() -> tuple[MemoryEventStore, KeyStore]:
    store = MemoryEventStore()
    return store, KeyStore.for_store(store)


def _recorded(new: NewEvent, stream: str = "users-1", version: int = 0) -> RecordedEvent:
    from datetime import UTC, datetime

    return RecordedEvent(stream, version, version + 1, new.id, new.type, new.data, new.metadata, datetime.now(UTC))


async def test_msgspec_structs_with_renames_and_factories() -> None:
    _, keys = await _store_with_keys()
    codec: Codec[Any] = Codec([StructSignedUp], keys=keys)
    await keys.ensure(["7"])
    event = StructSignedUp(7, "ada@example.com", ["vip"])
    new = codec.encode(event)
    stored = msgspec.json.decode(new.data)
    assert sorted(stored) == ["emailAddress", "tags", "userId"]
    assert stored["userId"] == 7 and stored["tags"].startswith("epoch:aes256gcm:")
    key_id = stored["tags"].split(":")[2]
    assert msgspec.json.decode(new.metadata) == {"$personal": {"7": [key_id]}}
    assert stored["emailAddress"].split(":")[2] == key_id
    assert codec.decode(_recorded(new)).data == event
    await keys.forget("7")
    assert codec.decode(_recorded(new)).data == StructSignedUp(7, None, ["none"])  # type: ignore[arg-type]


async def test_pydantic_models_with_aliases() -> None:
    _, keys = await _store_with_keys()
    codec: Codec[Any] = Codec([PydanticSignedUp], keys=keys)
    await keys.ensure(["u-1"])
    event = PydanticSignedUp(u="u-1", phone="+44 20 7946 0000")
    new = codec.encode(event)
    assert b"7946" not in new.data and msgspec.json.decode(new.data)["u"] == "u-1"
    assert codec.decode(_recorded(new)).data == event
    await keys.forget("u-1")
    assert codec.decode(_recorded(new)).data == PydanticSignedUp(u="u-1", phone=None)


async def test_without_keys_the_codec_writes_no_personal_metadata() -> None:
    codec = Codec([Registered])
    new = codec.encode(Registered("u1", "ada@example.com"))
    assert (new.data, new.metadata) == (b'{"user_id":"u1","email":"ada@example.com","name":"anonymous"}', b"")
    assert codec.keys is None


async def test_an_upcaster_sees_the_sealed_value_and_it_still_opens() -> None:
    _, keys = await _store_with_keys()
    old: Codec[Any] = Codec(
        [
            dataclasses.make_dataclass(
                "Moved", [("user_id", str), ("address", Annotated[str, Personal(subject="user_id")])]
            )
        ],
        keys=keys,
    )
    await keys.ensure(["u1"])
    written = old.encode(old._by_type["Moved"].cls("u1", "1 Main St"))
    seen: list[str] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(data["address"][:16])
        return data

    new: Codec[Moved] = Codec([Moved], upcasters={("Moved", 1): v1_to_v2}, keys=keys)
    assert new.decode(_recorded(written)).data == Moved("u1", "1 Main St")
    assert seen == ["epoch:aes256gcm:"]


def test_configuration_errors_name_the_field() -> None:
    keys = KeyStore.for_store(MemoryEventStore())

    @dataclass
    class NoSubject:
        email: Annotated[str, Personal(subject="user_id")]

    @dataclass
    class PersonalSubject:
        email: Annotated[str, Personal(subject="name")]
        name: Annotated[str, Personal(subject="email")]

    with pytest.raises(ConfigurationError) as info:
        Codec([NoSubject], keys=keys)
    assert str(info.value) == (
        "test_configuration_errors_name_the_field.<locals>.NoSubject.email: Personal(subject='user_id') names no field"
    )
    with pytest.raises(ConfigurationError) as info:
        Codec([PersonalSubject], keys=keys)
    assert str(info.value) == (
        "test_configuration_errors_name_the_field.<locals>.PersonalSubject.email: its subject 'name' is personal "
        "itself; the subject stays in clear (use a surrogate id)"
    )
    with pytest.raises(ConfigurationError) as store_info:
        KeyStore.for_store(object())
    assert str(store_info.value) == "object keeps no keys: personal data needs SupportsKeys"


async def test_a_null_subject_is_refused() -> None:
    _, keys = await _store_with_keys()

    @dataclass
    class Maybe:
        user_id: str | None
        email: Annotated[str, Personal(subject="user_id")]

    with pytest.raises(InvalidEvent) as info:
        Codec([Maybe], keys=keys).encode(Maybe(None, "x@example.com"))
    assert info.value.reason == "cannot encode 'Maybe': $.email is personal, its subject $.user_id is missing or null"


async def test_a_cache_unchecked_for_a_second_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryEventStore()
    table = keys_of(store)
    assert table is not None
    keys = KeyStore(table)  # as another process would hold it: revalidated, not shared
    await KeyStore.for_store(store).ensure(["u1"])
    codec = personal_codec(keys)
    new = personal_codec(KeyStore.for_store(store)).encode(Registered("u1", "ada@example.com"))
    await keys.preload(["u1"])
    assert codec.decode(_recorded(new)).data == Registered("u1", "ada@example.com")
    later = time.monotonic() + keystore.STALE_AFTER + 0.01
    monkeypatch.setattr(keystore, "_clock", lambda: later)
    with pytest.raises(KeyNotLoaded):
        codec.decode(_recorded(new))
    await keys.preload(["u1"])  # revalidates: the counter has not moved, the cache stands
    assert codec.decode(_recorded(new)).data == Registered("u1", "ada@example.com")


async def test_a_preload_the_store_answered_slowly_still_leaves_the_keys_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store takes over a second to answer the first check (a loaded machine): a check counts from
    when its query started, so that one is stale when it returns. ``preload`` checks again, and the decode
    right after it works (it raised ``KeyNotLoaded`` in a loaded test run: a 500 in the explorer)."""
    store = MemoryEventStore()
    found = keys_of(store)
    assert found is not None
    table: SupportsKeys = found
    now = [time.monotonic()]
    monkeypatch.setattr(keystore, "_clock", lambda: now[0])
    checks: list[float] = []

    class Slow:
        def __getattr__(self, name: str) -> Any:
            return getattr(table, name)

        async def key_changes(self) -> int:
            checks.append(now[0])
            if len(checks) == 1:
                now[0] += keystore.STALE_AFTER + 0.2  # the first answer comes after more than a second
            return await table.key_changes()

    keys = KeyStore(cast(SupportsKeys, Slow()))  # as another process would hold it: revalidated, not shared
    await KeyStore.for_store(store).ensure(["u1"])
    new = personal_codec(KeyStore.for_store(store)).encode(Registered("u1", "ada@example.com"))
    await keys.preload(["u1"])
    assert len(checks) == 2 and checks[1] - checks[0] > keystore.STALE_AFTER
    assert personal_codec(keys).decode(_recorded(new)).data == Registered("u1", "ada@example.com")


async def test_another_cache_sees_a_forget_on_its_next_revalidation(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryEventStore()
    table = keys_of(store)
    assert table is not None
    here, elsewhere = KeyStore.for_store(store), KeyStore(table)
    handler = CommandHandler(store, profiles, "profile", personal_codec(here))
    await handler.execute("u1", Register("ada@example.com", "Ada"), services="u1")
    other = CommandHandler(store, profiles, "profile", personal_codec(elsewhere))
    assert (await other.load("u1")).state == Profile("u1", "ada@example.com", "Ada")
    assert await here.forget("u1") == 1
    later = time.monotonic() + keystore.REVALIDATE_AFTER
    monkeypatch.setattr(keystore, "_clock", lambda: later)
    # The other handler's cached state was decided on the forgotten values: it is dropped, not used.
    assert (await other.load("u1")).state == Profile("u1", None, "anonymous")
    assert elsewhere.generation == 1


async def test_sagas_keep_working_after_a_forget() -> None:
    store, keys = await _store_with_keys()
    handler = CommandHandler(store, profiles, "profile", personal_codec(keys))
    await handler.execute("u1", Register("ada@example.com", "Ada"), services="u1")
    await handler.execute("u2", Register("grace@example.com", "Grace"), services="u2")
    await keys.forget("u1")
    seen: list[tuple[str, str | None]] = []

    def react(event: Any) -> list[Rename]:
        seen.append((event.user_id, event.name))
        # The reason carries the user id, so the route knows the entity.
        return [Rename(f"{event.name}!", reason=event.user_id)] if isinstance(event, Registered) else []

    def route(command: Rename) -> tuple[CommandHandler[Any, Any, Any], object]:
        return handler, command.reason

    runner = SagaRunner(store, personal_codec(keys), Saga(react), route, name="renamer", categories="profile")
    await runner.run_until_idle()
    assert seen[:2] == [("u1", "anonymous"), ("u2", "Grace")]
    assert (await handler.load("u1")).state == Profile("u1", None, "anonymous!", 1)
    assert (await handler.load("u2")).state == Profile("u2", "grace@example.com", "Grace!", 1)


@given(value=any_text)
async def test_any_text_round_trips_sealed_and_never_in_clear(value: str) -> None:
    store, keys = await _store_with_keys()
    codec = personal_codec(keys)
    with keys.creating():
        try:
            new = codec.encode(Registered("u1", value, value))
        except InvalidEvent as exc:  # a lone surrogate: not JSON text, refused as on any field
            assert exc.reason.startswith("cannot encode 'Registered': ")
            return
    await keys.save()
    if len(value) >= 4:
        assert value.encode() not in new.data
    assert codec.decode(_recorded(new)).data == Registered("u1", value, value)
    await keys.forget("u1")
    assert codec.decode(_recorded(new)).data == Registered("u1", None, "anonymous")  # type: ignore[arg-type]


@given(subject=hostile_names)
async def test_hostile_subjects_are_sealed_or_refused(subject: str) -> None:
    store, keys = await _store_with_keys()
    handler = CommandHandler(store, profiles, "profile", personal_codec(keys))
    try:
        result = await handler.execute("u", Register("ada@example.com", "Ada"), services=subject)
    except InvalidEvent as exc:
        assert not is_valid_name(subject, 256)
        assert exc.reason.startswith("cannot encode 'Registered': $.user_id")
        assert await collect(store.read_all()) == []
        assert await keys_of(store).read_keys([subject]) == []  # type: ignore[union-attr]
        return
    assert is_valid_name(subject, 256)
    assert result.state == Profile(subject, "ada@example.com", "Ada")
    assert await keys.forget(subject) == 1
    assert (await handler.load("u")).state == Profile(subject, None, "anonymous")


@given(subject=st.one_of(hostile_names, any_text))
async def test_forgetting_a_hostile_subject_is_refused_or_a_no_op(subject: str) -> None:
    store, keys = await _store_with_keys()
    try:
        assert await keys.forget(subject) == 0
    except InvalidEvent as exc:
        assert not is_valid_name(subject, 256)
        assert exc.reason.startswith(f"subject {subject!r} ")


@given(
    subjects=st.dictionaries(
        st.one_of(hostile_names, any_text), st.lists(st.one_of(any_text, st.integers())), max_size=4
    )
    | st.lists(st.one_of(hostile_names, st.integers()), max_size=3)
)
async def test_preloading_hostile_stored_subjects_never_fails(subjects: Any) -> None:
    store, keys = await _store_with_keys()
    # json.dumps writes a lone surrogate as its \\u escape, as another tool may have stored it
    record = _recorded(NewEvent("Registered", b"{}", json.dumps({"$personal": subjects}).encode()))
    from epoch.personal import subjects_in

    found = subjects_in([record])

    def readable(value: Any) -> bool:  # a str that is valid Unicode (JSON's lone-surrogate escape is not)
        return type(value) is str and not any("\ud800" <= c <= "\udfff" for c in value)

    # Unreadable metadata (not an object of str lists, or not valid Unicode) lists no subject: the codec
    # then reports the event itself.
    well_formed = isinstance(subjects, dict) and all(
        readable(s) and all(readable(i) for i in ids) for s, ids in subjects.items()
    )
    assert found == ({s: list(dict.fromkeys(ids)) for s, ids in subjects.items()} if well_formed else {})
    await keys.preload(found)
    # No key of them is stored: each asked-for key id reads as erased, none as not loaded.
    assert [keys.decryption_key(s, i) for s, ids in found.items() for i in ids] == [None] * sum(
        len(set(ids)) for ids in found.values()
    )


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("epoch:aes256gcm:nokeyid", "a sealed value without a key id"),
        ("epoch:aes256gcm:0011223344556677:not base64!", "a sealed value that is not base64"),
        ("epoch:aes256gcm:0011223344556677:AAAA", "a sealed value too short to hold a nonce and a tag"),
    ],
)
async def test_malformed_sealed_values_are_decode_errors(email: str, reason: str) -> None:
    _, keys = await _store_with_keys()
    await keys.preload(["u1"])
    data = json.dumps({"user_id": "u1", "email": email}).encode()
    record = _recorded(NewEvent("Registered", data, b'{"$personal": {"u1": ["0011223344556677"]}}'))
    with pytest.raises(DecodeError) as info:
        personal_codec(keys).decode(record)
    assert str(info.value) == f"users-1: cannot decode event 'Registered' at version 0: ValueError: $.email: {reason}"


async def test_ready_says_when_preload_has_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryEventStore()
    table = keys_of(store)
    assert table is not None
    keys = KeyStore(table)
    assert not keys.ready(["u1"])
    await keys.preload(["u1"])
    assert keys.ready(["u1"]) and not keys.ready(["u1", "u2"])
    later = time.monotonic() + keystore.REVALIDATE_AFTER
    monkeypatch.setattr(keystore, "_clock", lambda: later)
    assert not keys.ready(["u1"])  # due for a revalidation


async def test_guarantee_12_holds_for_personal_fields() -> None:
    _, keys = await _store_with_keys()

    @dataclass(frozen=True)
    class Measured:
        user_id: str
        weight: Annotated[float, Personal(subject="user_id")]

    codec: Codec[Any] = Codec([Measured], keys=keys)
    await keys.ensure(["u1"])
    with pytest.raises(InvalidEvent) as info:
        codec.encode(Measured("u1", math.nan))
    assert info.value.reason == "cannot encode 'Measured': $.weight is nan, and JSON has no NaN or infinity"
    assert codec.decode(_recorded(codec.encode(Measured("u1", 72.5)))).data == Measured("u1", 72.5)


class _Keyless:
    """An event store that keeps no keys (no SupportsKeys): only the protocol, delegated."""

    def __init__(self, store: MemoryEventStore) -> None:
        self.append = store.append
        self.read_stream = store.read_stream
        self.read_all = store.read_all
        self.subscribe = store.subscribe
        self.stream_version = store.stream_version
        self.head_position = store.head_position
        self.get_event = store.get_event
        self.delete_stream = store.delete_stream
        self.close = store.close


async def test_a_copy_into_a_store_without_keys_is_refused_before_writing() -> None:
    from epoch.stores.copy import copy_store

    source, keys = await _store_with_keys()
    await CommandHandler(source, profiles, "profile", personal_codec(keys)).execute(
        "u1", Register("ada@example.com", "Ada"), services="u1"
    )
    target = MemoryEventStore()
    with pytest.raises(ConfigurationError) as info:
        await copy_store(source, _Keyless(target))  # type: ignore[arg-type]
    assert str(info.value) == (
        "the source holds personal-data keys and the destination store keeps none: "
        "its encrypted fields would become unreadable"
    )
    assert await collect(target.read_all()) == []
    assert (await copy_store(MemoryEventStore(), _Keyless(target))).copied == 0  # type: ignore[arg-type]


@given(subject=st.one_of(hostile_names, any_text))
async def test_rotate_and_ensure_take_hostile_subjects(subject: str) -> None:
    store, keys = await _store_with_keys()
    table = keys_of(store)
    assert table is not None
    if not is_valid_name(subject, 256):
        for call in (keys.rotate(subject), keys.ensure([subject])):
            with pytest.raises(InvalidEvent) as info:
                await call
            assert info.value.reason.startswith(f"subject {subject!r} ")
        assert [k async for k in table.export_keys()] == []
        return
    first = await keys.rotate(subject)
    await keys.ensure([subject])  # it has a key: nothing more
    assert [k.key_id for k in await table.read_keys([subject])] == [first]
    assert await keys.forget(subject) == 1


@given(subject=any_text)
@example(subject="email")
@example(subject="user_id")
def test_a_personal_subject_naming_no_field_is_a_configuration_error(subject: str) -> None:
    marked = dataclasses.make_dataclass(
        "Marked", [("user_id", str), ("email", Annotated[str, Personal(subject=subject)])], frozen=True
    )
    keys = KeyStore.for_store(MemoryEventStore())
    if subject == "user_id":
        assert Codec([marked], keys=keys).keys is keys
        return
    with pytest.raises(ConfigurationError) as info:
        Codec([marked], keys=keys)
    if subject == "email":
        assert str(info.value) == (
            "Marked.email: its subject 'email' is personal itself; the subject stays in clear (use a surrogate id)"
        )
    else:
        assert str(info.value) == f"Marked.email: Personal(subject={subject!r}) names no field"


class UuidSubject(msgspec.Struct, frozen=True, omit_defaults=True):
    person: uuid.UUID
    note: Annotated[str, Personal(subject="person")] = ""
    phones: Annotated[list[str], Personal(subject="person")] = []


async def test_a_uuid_subject_and_omitted_defaults() -> None:
    store, keys = await _store_with_keys()
    person = uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    codec: Codec[Any] = Codec([UuidSubject], keys=keys)
    await keys.ensure([str(person)])
    event = UuidSubject(person, "likes tea")
    new = codec.encode(event)
    key_id = msgspec.json.decode(new.data)["note"].split(":")[2]
    assert msgspec.json.decode(new.metadata) == {"$personal": {str(person): [key_id]}}
    assert sorted(msgspec.json.decode(new.data)) == ["note", "person"]  # phones left out, as without keys
    assert codec.decode(_recorded(new)).data == event
    await keys.forget(str(person))
    assert codec.decode(_recorded(new)).data == UuidSubject(person)


async def test_fields_marked_later_and_codecs_without_keys() -> None:
    _, keys = await _store_with_keys()
    plain = Codec([Registered]).encode(Registered("u1", "ada@example.com", "Ada"))
    sealed_codec = personal_codec(keys)
    await keys.preload(["u1"])
    # Written before the field was marked (no key, no $personal): read as it is.
    assert sealed_codec.decode(_recorded(plain)).data == Registered("u1", "ada@example.com", "Ada")
    await keys.ensure(["u1"])
    sealed = sealed_codec.encode(Registered("u1", "ada@example.com", "Ada"))
    # A codec without keys= never decrypts: the field reads as its sealed string.
    email = Codec([Registered]).decode(_recorded(sealed)).data.email
    # No part of the address shows ("example" covers it); a bare "ada" may, in the random hex key id.
    assert email.startswith("epoch:aes256gcm:") and "example" not in email


async def test_the_memory_stores_key_store_sees_another_key_stores_forget(monkeypatch: pytest.MonkeyPatch) -> None:
    store, shared = await _store_with_keys()
    table = keys_of(store)
    assert table is not None
    handler = CommandHandler(store, profiles, "profile", personal_codec(shared))
    await handler.execute("u1", Register("ada@example.com", "Ada"), services="u1")
    assert await KeyStore(table).forget("u1") == 1
    later = time.monotonic() + keystore.STALE_AFTER * 10  # never stale (its table is in process), revalidated
    monkeypatch.setattr(keystore, "_clock", lambda: later)
    assert (await handler.load("u1")).state == Profile("u1", None, "anonymous")


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_a_preload_reading_when_its_subject_is_forgotten_keeps_no_erased_key(url: str, tmp_path: object) -> None:
    """The key table answers a preload slowly, and the same key store forgets the subject meanwhile: the
    rows the read brought back (the erased key) are not cached, so nothing decodes or is sealed with it."""
    async with open_store(url if url == "memory://" else f"sqlite:///{tmp_path}/k.db") as store:
        writer = KeyStore.for_store(store)
        await writer.ensure(["u1"])
        await store.append("profile-u1", [personal_codec(writer).encode(Registered("u1", "ada@example.com"))])
        [record] = [r async for r in store.read_stream("profile-u1")]
        [erased] = json.loads(record.metadata)["$personal"]["u1"]
        table = HeldKeys(store)
        keys = KeyStore(table)  # as another process would hold it
        codec = personal_codec(keys)
        inside, release = table.hold("read_keys")
        loading = asyncio.create_task(keys.preload(["u1"]))
        await inside.wait()  # the erased key is on its way back
        assert await keys.forget("u1") == 1
        release.set()
        await loading
        assert codec.decode(record).data == Registered("u1", None, "anonymous")  # type: ignore[arg-type]
        assert table.reads == [["u1"], ["u1"]]  # read again: the first answer may predate the forget
        await keys.ensure(["u1"])
        sealed = codec.encode(Registered("u1", "new@example.com"))
        [key] = await table.read_keys(["u1"])
        assert json.loads(sealed.metadata)["$personal"] == {"u1": [key.key_id]} and key.key_id != erased
        assert codec.decode(_recorded(sealed)).data == Registered("u1", "new@example.com")


async def test_a_preload_reading_when_a_revalidation_sees_a_forget_keeps_no_erased_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process forgets while this one's preload waits for its rows, and another task here
    revalidates meanwhile: the rows are not cached, nor is the erased key kept past the next check."""
    now = [time.monotonic()]
    monkeypatch.setattr(keystore, "_clock", lambda: now[0])
    store = MemoryEventStore()
    writer = KeyStore.for_store(store)
    await writer.ensure(["u1"])
    new = personal_codec(writer).encode(Registered("u1", "ada@example.com"))
    table = HeldKeys(store)
    keys = KeyStore(table)  # as another process would hold it: revalidated, not shared
    codec = personal_codec(keys)
    await keys.refresh()  # the change counter known
    inside, release = table.hold("read_keys")
    loading = asyncio.create_task(keys.preload(["u1"]))
    await inside.wait()
    assert await writer.forget("u1") == 1
    now[0] += keystore.REVALIDATE_AFTER
    await keys.refresh()  # another task of this process sees the forget
    assert keys.generation == 1
    release.set()
    await loading
    assert codec.decode(_recorded(new)).data == Registered("u1", None, "anonymous")  # type: ignore[arg-type]
    now[0] += keystore.REVALIDATE_AFTER
    await keys.preload(["u1"])
    assert codec.decode(_recorded(new)).data == Registered("u1", None, "anonymous")  # type: ignore[arg-type]
