"""The contract's personal data (DESIGN §8, crypto-shredding): on every store that keeps keys
(:class:`~epoch.stores.SupportsKeys`), sealed fields round-trip, are never stored in clear, read as
redacted after a forget (also for deciders, projections and copies), and need their keys preloaded."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from epoch.commands import CommandHandler
from epoch.errors import DecodeError, InvalidEvent, KeyNotLoaded, MissingDependency
from epoch.personal import KeyStore
from epoch.projections import ProjectionRunner
from epoch.records import EventEnvelope, NewEvent, RecordedEvent
from epoch.stores import EventStore, SubjectKey, SupportsKeys, keys_of
from epoch.stores.copy import copy_store
from epoch.stores.memory import MemoryEventStore
from epoch.testing._events import collect
from epoch.testing._personal_domain import (
    Profile,
    Register,
    Registered,
    Rename,
    Renamed,
    personal_codec,
    profiles,
)

__all__ = ["PersonalDataContract"]

ADA = ("ada@example.com", "Ada Lovelace")
GRACE = ("grace@example.com", "Grace Hopper")


def _table(store: EventStore) -> SupportsKeys:
    table = keys_of(store)
    if table is None:
        pytest.skip(f"{type(store).__name__} keeps no personal-data keys (no SupportsKeys)")
    try:  # sealing needs the extra: without it each test would fail on its first encode
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    except ImportError:
        pytest.skip(f"{type(store).__name__} keeps keys, but {MissingDependency('cryptography', 'crypto')}")
    return table


async def _register(store: EventStore, keys: KeyStore) -> CommandHandler[Any, Profile, Any]:
    handler = CommandHandler(store, profiles, "profile", personal_codec(keys))
    await handler.execute("u1", Register(*ADA), services="u1")
    await handler.execute("u2", Register(*GRACE), services="u2")
    await handler.execute("u1", Rename("Ada King", reason="married"))
    return handler


class _Names:
    name = "profile-names"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen.append((envelope.stream, envelope.data.name))


class PersonalDataContract:
    """Mixed into :class:`~epoch.testing.contract.EventStoreContract`; uses its ``store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    async def test_personal_fields_round_trip_and_are_stored_sealed(self, store: EventStore) -> None:
        table = _table(store)
        keys = KeyStore.for_store(store)
        handler = await _register(store, keys)
        records = await collect(store.read_all())
        assert [r.type for r in records] == ["Registered", "Registered", "Renamed"]
        for record in records:
            for plain in (*ADA, *GRACE, "Ada King"):
                assert plain.encode() not in record.data + record.metadata, (record, plain)
            key_id = record.data.split(b"epoch:aes256gcm:")[1][:16].decode()
            assert msgspec.json.decode(record.metadata)["$personal"] == {
                record.stream.removeprefix("profile-"): [key_id]
            }
        codec = personal_codec(keys)
        assert [codec.decode(r).data for r in records] == [
            Registered("u1", *ADA),
            Registered("u2", *GRACE),
            Renamed("u1", "Ada King", "married"),
        ]
        fresh = CommandHandler(store, profiles, "profile", codec, cache=None)
        assert (await fresh.load("u1")).state == Profile("u1", ADA[0], "Ada King", 1)
        stored = await table.read_keys(["u1", "u2", "nobody"])
        assert [(k.subject, len(k.key_id), len(k.key)) for k in stored] == [("u1", 16, 32), ("u2", 16, 32)]
        assert (await handler.load("u2")).state == Profile("u2", *GRACE)

    async def test_decoding_needs_the_key_preloaded(self, store: EventStore) -> None:
        table = _table(store)
        await _register(store, KeyStore.for_store(store))
        elsewhere = KeyStore(table)  # another process's cache: nothing loaded yet
        codec = personal_codec(elsewhere)
        first = (await collect(store.read_stream("profile-u1")))[0]
        with pytest.raises(KeyNotLoaded) as info:
            codec.decode(first)
        assert str(info.value) == (
            "profile-u1: event 'Registered' at version 0 needs the key of subject 'u1', which is not loaded: "
            "await keys.preload(['u1']) before decoding"
        )
        assert (info.value.subject, info.value.stream, info.value.version) == ("u1", "profile-u1", 0)
        with pytest.raises(KeyNotLoaded):
            codec.decode_data(first)
        await elsewhere.preload(["u1"])
        assert codec.decode_data(first) == Registered("u1", *ADA)
        with pytest.raises(KeyNotLoaded) as encoding:
            codec.encode(Registered("u3", "x@example.com"))
        assert str(encoding.value) == (
            "the key of subject 'u3', which is not loaded: await keys.preload(['u3']) before decoding"
        )

    async def test_forget_redacts_and_deciders_keep_working(self, store: EventStore) -> None:
        table = _table(store)
        keys = KeyStore.for_store(store)
        handler = await _register(store, keys)
        changes = await table.key_changes()
        assert await keys.forget("u1") == 1
        assert await table.key_changes() == changes + 1
        assert await table.read_keys(["u1"]) == []
        codec = personal_codec(keys)
        assert [codec.decode(r).data for r in await collect(store.read_all())] == [
            Registered("u1", None, "anonymous"),  # type: ignore[arg-type]  # the forgotten str reads as None
            Registered("u2", *GRACE),
            Renamed("u1", None, "married"),
        ]
        assert (await handler.load("u1")).state == Profile("u1", None, None, 1)
        result = await handler.execute("u1", Rename("Ada"))
        assert result.state == Profile("u1", None, "Ada", 2)
        fresh = CommandHandler(store, profiles, "profile", personal_codec(KeyStore(table)), cache=None)
        assert (await fresh.load("u1")).state == Profile("u1", None, "Ada", 2)
        assert (await fresh.load("u2")).state == Profile("u2", *GRACE)
        assert await keys.forget("u1") == 1  # the key the rename created
        assert await keys.forget("nobody") == 0

    async def test_a_bad_subject_is_refused_and_nothing_is_written(self, store: EventStore) -> None:
        _table(store)
        keys = KeyStore.for_store(store)
        handler = CommandHandler(store, profiles, "profile", personal_codec(keys))
        with pytest.raises(InvalidEvent) as info:
            await handler.execute("u9", Register(*ADA), services=" u9")
        assert str(info.value) == (
            "profile-u9: invalid event at index 0: cannot encode 'Registered': $.user_id: subject ' u9' has "
            "leading or trailing whitespace"
        )
        with pytest.raises(InvalidEvent) as forgetting:
            await keys.forget("")
        assert forgetting.value.reason == "subject '' must have 1 to 256 characters, not 0"
        assert await collect(store.read_all()) == []

    async def test_rotation_keeps_old_events_readable_until_forgotten(self, store: EventStore) -> None:
        table = _table(store)
        keys = KeyStore.for_store(store)
        handler = await _register(store, keys)
        new_id = await keys.rotate("u1")
        await handler.execute("u1", Rename("Ada L."))
        records = await collect(store.read_stream("profile-u1"))
        ids = [r.data.split(b"epoch:aes256gcm:")[1][:16].decode() for r in records]
        assert ids[0] == ids[1] != ids[2] == new_id
        assert [k.key_id for k in await table.read_keys(["u1"])][-1] == new_id
        codec = personal_codec(keys)
        assert [codec.decode(r).data.name for r in records] == ["Ada Lovelace", "Ada King", "Ada L."]
        assert await keys.forget("u1") == 2
        assert [codec.decode(r).data.name for r in records] == ["anonymous", None, None]

    async def test_a_key_made_elsewhere_is_loaded_never_taken_for_erased(self, store: EventStore) -> None:
        table = _table(store)
        here = await _register(store, KeyStore.for_store(store))
        elsewhere = KeyStore(table)  # another process's cache
        other = CommandHandler(store, profiles, "profile", personal_codec(elsewhere))
        assert (await other.load("u1")).state == Profile("u1", ADA[0], "Ada King", 1)
        await KeyStore.for_store(store).rotate("u1")  # a newer key, made here
        await here.execute("u1", Rename("Ada L."))
        assert (await other.load("u1")).state == Profile("u1", ADA[0], "Ada L.", 2)
        names = _Names()
        await ProjectionRunner(store, personal_codec(elsewhere), [names]).run_until_idle()
        assert names.seen[-1] == ("profile-u1", "Ada L.")
        new = (await collect(store.read_stream("profile-u1", backwards=True, limit=1)))[0]
        fresh = personal_codec(KeyStore(table))
        with pytest.raises(KeyNotLoaded):
            fresh.decode(new)
        await fresh.keys.preload(["u1"])  # type: ignore[union-attr]
        assert fresh.decode(new).data == Renamed("u1", "Ada L.")

    async def test_key_table(self, store: EventStore) -> None:
        table = _table(store)
        keys = [SubjectKey("s", f"{n:016x}", bytes([n]) * 32, 1000 - n) for n in range(3)]
        await table.write_keys(keys)
        await table.write_keys([SubjectKey("s", keys[0].key_id, b"\0" * 32, 5)])  # stored: left as it is
        assert await table.read_keys(["s"]) == keys[::-1]
        assert sorted([k async for k in table.export_keys()], key=lambda k: k.key_id) == keys
        before = await table.key_changes()
        assert await table.forget_keys("s") == 3
        assert (await table.read_keys(["s"]), await table.key_changes()) == ([], before + 1)

    async def test_projections_keep_working_after_a_forget(self, store: EventStore) -> None:
        keys = KeyStore(_table(store))
        await _register(store, KeyStore.for_store(store))
        await KeyStore.for_store(store).forget("u2")
        names = _Names()
        await ProjectionRunner(store, personal_codec(keys), [names]).run_until_idle()
        assert names.seen == [("profile-u1", "Ada Lovelace"), ("profile-u2", "anonymous"), ("profile-u1", "Ada King")]

    async def test_tampered_or_moved_ciphertext_is_a_decode_error(self, store: EventStore) -> None:
        _table(store)
        keys = KeyStore.for_store(store)
        await _register(store, keys)
        first = (await collect(store.read_stream("profile-u1")))[0]
        data = msgspec.json.decode(first.data)
        moved = {**data, "email": data["name"], "name": data["email"]}
        await store.append("profile-u3", [NewEvent("Registered", msgspec.json.encode(moved), first.metadata)])
        [record] = await collect(store.read_stream("profile-u3"))
        with pytest.raises(DecodeError) as info:
            personal_codec(keys).decode(record)
        assert str(info.value) == (
            "profile-u3: cannot decode event 'Registered' at version 0: ValueError: $.email: it does not "
            "decrypt with its key (tampered, or moved from another subject or field)"
        )

    async def test_a_copy_carries_ciphertext_and_keys(self, store: EventStore) -> None:
        _table(store)
        await _register(store, KeyStore.for_store(store))
        await KeyStore.for_store(store).forget("u2")
        async with MemoryEventStore() as copy:
            result = await copy_store(store, copy)
            assert (result.copied, result.keys) == (3, 1)
            await _same_bytes_and_redacted(store, copy)

    async def test_a_copy_into_this_store_carries_keys(self, store: EventStore) -> None:
        _table(store)
        async with MemoryEventStore() as source:
            await _register(source, KeyStore.for_store(source))
            await KeyStore.for_store(source).forget("u2")
            assert (await copy_store(source, store)).keys == 1
            await _same_bytes_and_redacted(source, store)


async def _same_bytes_and_redacted(source: EventStore, copy: EventStore) -> None:
    def stored(records: list[RecordedEvent]) -> list[tuple[str, bytes, bytes]]:
        return [(r.stream, r.data, r.metadata) for r in records]

    records = await collect(copy.read_all())
    assert stored(records) == stored(await collect(source.read_all()))
    codec = personal_codec(KeyStore.for_store(copy))
    handler = CommandHandler(copy, profiles, "profile", codec)
    assert (await handler.load("u1")).state == Profile("u1", ADA[0], "Ada King", 1)
    assert (await handler.load("u2")).state == Profile("u2", None, "anonymous")
