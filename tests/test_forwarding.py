"""Forwarding to a real NATS JetStream: every event arrives once, in stream order, across kills and restarts."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import nats
import pytest

from epoch import EventStore, NewEvent, ProjectionFailed, open_store
from epoch.errors import ConfigurationError
from epoch.forwarding import Forwarder, Message, Unpublishable
from epoch.forwarding.forwarder import _Bytes, _message
from epoch.forwarding.nats import JetStreamSink, headers_of, subject_token
from tests.nats_servers import NatsServer, fresh_prefix, shared_url

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Received:
    subject: str
    stream: str
    version: int
    position: int
    id: str
    type: str
    data: bytes


async def received(url: str, prefix: str) -> list[Received]:
    """Every message of the JetStream stream ``prefix``, in the order JetStream stored them."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(prefix)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
            msg = await js.get_msg(prefix, seq)
            headers = msg.headers or {}
            found.append(
                Received(
                    subject=msg.subject or "",
                    stream=headers["Epoch-Stream"],
                    version=int(headers["Epoch-Version"]),
                    position=int(headers["Epoch-Position"]),
                    id=headers["Nats-Msg-Id"],
                    type=headers["Epoch-Type"],
                    data=msg.data or b"",
                )
            )
        assert len(found) == info.state.messages
        return found
    finally:
        await client.close()


async def create_stream(url: str, prefix: str) -> None:
    async with JetStreamSink(url) as sink:
        await sink.ensure_stream(prefix, [f"{prefix}.>"])


async def seed(store: EventStore, streams: list[str], per_stream: int, chunk: int = 10) -> list[UUID]:
    """Append ``per_stream`` events to each stream, ``chunk`` at a time, the streams interleaved."""
    ids = []
    for start in range(0, per_stream, chunk):
        for stream in streams:
            events = [
                NewEvent("Moved", f'{{"stream": "{stream}", "n": {n}}}'.encode())
                for n in range(start, min(start + chunk, per_stream))
            ]
            await store.append(stream, events)
            ids += [e.id for e in events]
    return ids


def versions_by_stream(messages: list[Received]) -> dict[str, list[int]]:
    by_stream: dict[str, list[int]] = {}
    for message in messages:
        by_stream.setdefault(message.stream, []).append(message.version)
    return by_stream


@pytest.fixture
async def sql_store(sql_store_url: str) -> AsyncIterator[EventStore]:
    async with open_store(sql_store_url) as store:
        yield store


async def test_every_event_arrives_once_in_stream_order(sql_store: EventStore) -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    streams = ["users-1", "orders-2", "orders-3", "users-4"]
    await seed(sql_store, streams, 30, chunk=7)
    await sql_store.append("orders-2", [NewEvent("Order.Placed", b'{"total": 3}', b'{"who": "ada"}')])
    async with JetStreamSink(url, subject=prefix + ".{category}.{type}") as sink:
        forwarder = Forwarder(sql_store, sink, name="to-nats", batch_size=50)
        await forwarder.run_until_idle()
        assert (sink.published, sink.duplicates) == (121, 0)
        assert await forwarder.position() == await sql_store.head_position()
        await forwarder.run_until_idle()  # from the checkpoint: nothing more to publish
        assert sink.published == 121
    messages = await received(url, prefix)
    stored = [r async for r in sql_store.read_all()]
    # Streams are published side by side: the order holds within each stream, not across them.
    by_position = sorted(messages, key=lambda m: m.position)
    assert [(m.stream, m.version, m.position, m.id, m.type, m.data) for m in by_position] == [
        (r.stream, r.version, r.position, str(r.id), r.type, r.data) for r in stored
    ]
    assert versions_by_stream(messages) == {
        "users-1": list(range(30)),
        "orders-2": list(range(31)),
        "orders-3": list(range(30)),
        "users-4": list(range(30)),
    }
    assert by_position[0].subject == f"{prefix}.users.Moved"
    assert by_position[-1].subject == f"{prefix}.orders.Order_Placed"


async def test_publishing_again_from_the_start_is_absorbed_by_jetstream(tmp_path: Path) -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    async with open_store(f"sqlite:///{tmp_path / 'epoch.db'}") as store:
        await seed(store, ["a-1", "a-2"], 20)
        async with JetStreamSink(url, subject=prefix + ".{category}") as sink:
            forwarder = Forwarder(store, sink, name="again", categories="a")
            await forwarder.run_until_idle()
            await forwarder.runner.checkpoints.delete("again")  # as if every ack had been lost
            await Forwarder(store, sink, name="again", categories="a").run_until_idle()  # a restart
            assert (sink.published, sink.duplicates) == (80, 40)
    assert versions_by_stream(await received(url, prefix)) == {"a-1": list(range(20)), "a-2": list(range(20))}


async def test_categories_and_types_select_what_is_forwarded(tmp_path: Path) -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    async with open_store(f"sqlite:///{tmp_path / 'epoch.db'}") as store:
        await store.append("users-1", [NewEvent("Added", b"1"), NewEvent("Renamed", b"2")])
        await store.append("orders-1", [NewEvent("Added", b"3")])
        async with JetStreamSink(url, subject=prefix + ".{stream}") as sink:
            await Forwarder(store, sink, categories=["users"], event_types=["Renamed"]).run_until_idle()
    assert [(m.subject, m.data) for m in await received(url, prefix)] == [(f"{prefix}.users-1", b"2")]


def test_subject_tokens_hold_no_separator_wildcard_or_space() -> None:
    assert subject_token("Order.Placed *all> now\tok") == "Order_Placed__all__now_ok"
    assert subject_token("users-ä") == "users-ä"


def test_an_empty_value_is_a_token_too() -> None:
    assert subject_token("") == "_"  # the category of "-x" and "--": NATS refuses an empty token
    assert subject_token("_") == "_"  # shared with the category "_", as "a.b" shares "a_b" (documented)


async def test_streams_of_an_empty_category_are_forwarded() -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    async with open_store("memory://") as store:
        await store.append("users-1", [NewEvent("Added", b"1")])
        await store.append("-x", [NewEvent("Added", b"2")])
        await store.append("--", [NewEvent("Added", b"3")])
        async with JetStreamSink(url, subject=prefix + ".{category}.{type}", timeout=2.0) as sink:
            forwarder = Forwarder(store, sink, retry_for=1.0)
            await forwarder.run_until_idle()
            assert await forwarder.position() == 3
    messages = sorted(await received(url, prefix), key=lambda m: m.position)
    assert [(m.subject, m.stream, m.data) for m in messages] == [
        (f"{prefix}.users.Added", "users-1", b"1"),
        (f"{prefix}._.Added", "-x", b"2"),
        (f"{prefix}._.Added", "--", b"3"),
    ]


def test_a_subject_template_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        JetStreamSink(subject="epoch.{tenant}.{type}")
    assert str(raised.value) == (
        "subject template 'epoch.{tenant}.{type}' may use only {category}, {type} and {stream}"
    )


async def test_publishing_before_connecting_is_a_clear_error() -> None:
    sink = JetStreamSink()
    message = Message(
        id=UUID(int=1),
        stream="a-1",
        category="a",
        version=0,
        position=1,
        type="T",
        data=b"",
        metadata={},
        recorded_at=datetime.now(UTC),
    )
    with pytest.raises(ConfigurationError) as raised:
        await sink.publish(message)
    assert str(raised.value) == "JetStreamSink is not connected: use `async with JetStreamSink(...)`"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
async def test_a_forwarder_killed_mid_run_resumes_and_loses_nothing(tmp_path: Path) -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    store_url = f"sqlite:///{tmp_path / 'epoch.db'}"
    streams = [f"acct-{i}" for i in range(6)]
    async with open_store(store_url) as store:
        await seed(store, streams, 500, chunk=50)
    acks = tmp_path / "acks.txt"
    argv = [sys.executable, "-m", "tests.forward_worker", store_url, url, prefix, str(acks)]
    worker = subprocess.Popen(argv, cwd=ROOT)
    deadline = time.monotonic() + 60
    while len(_lines(acks)) < 700:  # mid-way through the second batch of 500
        assert worker.poll() is None, "the forwarder ended before it could be killed"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    before_restart = len(_lines(acks))
    assert 700 <= before_restart < 3000

    assert subprocess.run(argv, cwd=ROOT, timeout=120).returncode == 0
    lines = _lines(acks)
    duplicates = [line for line in lines if line.endswith(" 1")]
    assert len({line.split()[0] for line in lines}) == 3000  # every event acknowledged
    assert len(duplicates) >= 1  # the restart published again what the killed run had not checkpointed
    messages = await received(url, prefix)
    assert len(messages) == 3000
    assert versions_by_stream(messages) == {stream: list(range(500)) for stream in streams}


class SlowSink(JetStreamSink):
    """Takes a moment per publish, so the broker can be restarted while the forwarder is mid-run."""

    async def publish(self, message: Message) -> None:
        await asyncio.sleep(0.002)
        await super().publish(message)


@pytest.mark.slow
async def test_a_broker_restart_delays_forwarding_and_loses_nothing(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        prefix = fresh_prefix()
        await create_stream(server.url, prefix)
        async with open_store(f"sqlite:///{tmp_path / 'epoch.db'}") as store:
            await seed(store, ["one-1", "two-2"], 300, chunk=30)
            async with SlowSink(server.url, subject=prefix + ".{category}", timeout=1.0) as sink:
                forwarder = Forwarder(store, sink, name="restart", batch_size=100, max_backoff=0.5)
                async with forwarder:
                    deadline = time.monotonic() + 60
                    while sink.published < 150:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.01)
                    server.stop()
                    await asyncio.sleep(0.2)  # acknowledgements already received are counted
                    stopped_at = sink.published
                    await asyncio.sleep(1.5)
                    assert sink.published == stopped_at  # nothing is acknowledged while the broker is down
                    server.start()
                    while await forwarder.position() < await store.head_position():
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                    await store.append("one-1", [NewEvent("Moved", b"live")])  # and it follows live events
                    while await forwarder.position() < await store.head_position():
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
        messages = await received(server.url, prefix)
        assert len(messages) == 601
        assert versions_by_stream(messages) == {"one-1": list(range(301)), "two-2": list(range(300))}
    finally:
        server.stop()


class Refusing:
    """A broker that never accepts a message."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, message: Message) -> None:
        self.attempts += 1
        raise RuntimeError("broker says no")


async def test_a_broker_that_keeps_failing_stops_the_forwarder_before_the_batch() -> None:
    async with open_store("memory://") as store:
        await store.append("a-1", [NewEvent("T", b"1"), NewEvent("T", b"2")])
        sink = Refusing()
        forwarder = Forwarder(store, sink, name="f", retry_for=0.2, first_backoff=0.01, max_backoff=0.02)
        with pytest.raises(ProjectionFailed) as raised:
            await forwarder.run_until_idle()
        assert str(raised.value) == "projection 'f' stopped at a-1 version 0 (position 1): RuntimeError: broker says no"
        assert await forwarder.position() == 0
        assert sink.attempts > 2  # retried with backoff, not given up at once


class Jittery:
    """Acknowledges after a random delay, so streams published side by side finish in any order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.rng = random.Random(7)

    async def publish(self, message: Message) -> None:
        await asyncio.sleep(self.rng.random() / 500)
        self.seen.append((message.stream, message.version))


async def test_streams_go_side_by_side_and_each_stays_in_version_order() -> None:
    async with open_store("memory://") as store:
        streams = [f"s-{i}" for i in range(8)]
        await seed(store, streams, 25, chunk=5)
        sink = Jittery()
        await Forwarder(store, sink, batch_size=64, concurrency=4).run_until_idle()
    by_stream: dict[str, list[int]] = {}
    for stream, version in sink.seen:
        by_stream.setdefault(stream, []).append(version)
    assert by_stream == {stream: list(range(25)) for stream in streams}
    assert [s for s, _ in sink.seen] != sorted((s for s, _ in sink.seen), key=streams.index)  # interleaved


class TooLarge:
    """A broker that can never take a message (as NATS one above its max_payload)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, message: Message) -> None:
        self.attempts += 1
        raise Unpublishable(message.stream, message.version, message.position, "too large")


async def test_an_unpublishable_message_stops_the_forwarder_at_once() -> None:
    async with open_store("memory://") as store:
        await store.append("a-1", [NewEvent("T", b"1")])
        sink = TooLarge()
        forwarder = Forwarder(store, sink, name="f", retry_for=5.0, first_backoff=0.01, max_backoff=0.02)
        started = time.monotonic()
        with pytest.raises(ProjectionFailed) as raised:
            await forwarder.run_until_idle()
        assert time.monotonic() - started < 1.0
        assert str(raised.value) == (
            "projection 'f' stopped at a-1 version 0 (position 1): Unpublishable: a-1 version 0 (position 1): too large"
        )
        assert (sink.attempts, await forwarder.position()) == (1, 0)


def header_bytes(message: Message) -> int:
    """What the headers take in the NATS message: ``NATS/1.0``, one ``key: value`` line each, a blank line."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers_of(message).items())
    return len(f"NATS/1.0\r\n{lines}\r\n".encode())


async def test_a_message_over_max_payload_is_refused_before_it_is_sent() -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    async with JetStreamSink(url, subject=prefix + ".{category}", timeout=2.0) as sink:
        limit = sink.max_payload
        assert limit == 1024 * 1024  # the server's default
        metadata = {"who": "ada", "note": "é" * 100}
        base = Message(UUID(int=7), "big-1", "big", 0, 1, "Big", b"", metadata, datetime(2026, 5, 1, 12, 0, 0, 1, UTC))
        fits = replace(base, data=b"x" * (limit - header_bytes(base)))
        await sink.publish(fits)  # exactly max_payload, headers included: the server takes it
        over = replace(base, id=UUID(int=8), version=1, position=2, data=fits.data + b"x")
        headers = header_bytes(over)
        with pytest.raises(Unpublishable) as raised:
            await sink.publish(over)
        assert str(raised.value) == (
            f"big-1 version 1 (position 2): the NATS message would be {limit + 1} bytes ({len(over.data)} of data "
            f"and {headers} of headers, the metadata among them), more than the server's max_payload of {limit}: "
            "raise max_payload in the server's configuration, or keep events smaller"
        )
        assert sink.published == 1
        await sink.publish(replace(base, id=UUID(int=9), version=1, position=2, data=b"{}"))  # still connected
    assert [(m.stream, m.version, len(m.data)) for m in await received(url, prefix)] == [
        ("big-1", 0, len(fits.data)),
        ("big-1", 1, 2),
    ]


async def test_an_event_the_store_takes_but_nats_cannot_stops_the_forwarder_at_once() -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_stream(url, prefix)
    async with open_store("memory://") as store:
        metadata = b'{"k": "' + b"m" * 1000 + b'"}'
        await store.append("big-1", [NewEvent("Big", b"x" * (1024 * 1024 - len(metadata)), metadata)])  # the limit
        await store.append("big-2", [NewEvent("Small", b"{}")])
        async with JetStreamSink(url, subject=prefix + ".{category}", timeout=2.0) as sink:
            forwarder = Forwarder(store, sink, name="big", retry_for=30.0)
            started = time.monotonic()
            with pytest.raises(ProjectionFailed) as raised:
                await forwarder.run_until_idle()
            assert time.monotonic() - started < 5.0
            assert await forwarder.position() == 0
        recorded, _small = [r async for r in store.read_all()]
        headers = header_bytes(_message(_Bytes().decode(recorded)))
        data = len(recorded.data)
        assert str(raised.value) == (
            "projection 'big' stopped at big-1 version 0 (position 1): Unpublishable: big-1 version 0 (position 1): "
            f"the NATS message would be {data + headers} bytes ({data} of data and {headers} of headers, the "
            "metadata among them), more than the server's max_payload of 1048576: raise max_payload in the "
            "server's configuration, or keep events smaller"
        )


async def create_small_stream(url: str, prefix: str, max_msg_size: int) -> None:
    """A JetStream stream on ``prefix.>`` that takes messages of at most ``max_msg_size`` bytes (headers
    and data: the server counts both)."""
    from nats.js.api import StorageType, StreamConfig

    client = await nats.connect(url)
    try:
        config = StreamConfig(
            name=prefix, subjects=[f"{prefix}.>"], storage=StorageType.FILE, max_msg_size=max_msg_size
        )
        await client.jetstream().add_stream(config)
    finally:
        await client.close()


def _over_max_msg_size(message: Message, prefix: str, limit: object) -> str:
    headers, data = header_bytes(message), len(message.data)
    return (
        f"{message.stream} version {message.version} (position {message.position}): the NATS message is "
        f"{headers + data} bytes ({data} of data and {headers} of headers, the metadata among them), more than "
        f"the max_msg_size of {limit} of the JetStream stream {prefix!r} (the server refused it: message size "
        "exceeds maximum allowed, err_code 10054): raise the stream's max_msg_size, or keep events smaller"
    )


async def test_a_message_over_the_streams_max_msg_size_is_unpublishable() -> None:
    """Below the server's max_payload, but above the JetStream stream's own max_msg_size: the server
    answers the publish with an API error (400, err_code 10054) every time, so retrying cannot help."""
    url, prefix = shared_url(), fresh_prefix()
    await create_small_stream(url, prefix, 1000)
    async with JetStreamSink(url, subject=prefix + ".{category}", timeout=2.0) as sink:
        base = Message(UUID(int=7), "big-1", "big", 0, 1, "Big", b"", {"who": "ada"}, datetime(2026, 5, 1, tzinfo=UTC))
        fits = replace(base, data=b"x" * (1000 - header_bytes(base)))
        await sink.publish(fits)  # exactly max_msg_size, headers included: the stream takes it
        over = replace(base, id=UUID(int=8), version=1, position=2, data=fits.data + b"x")
        with pytest.raises(Unpublishable) as raised:
            await sink.publish(over)
        assert str(raised.value) == _over_max_msg_size(over, prefix, 1000)
        assert (raised.value.stream, raised.value.version, raised.value.position) == ("big-1", 1, 2)
        assert sink.published == 1
        await sink.publish(replace(base, id=UUID(int=9), version=1, position=2, data=b"{}"))  # still connected
    assert [(m.stream, m.version, len(m.data)) for m in await received(url, prefix)] == [
        ("big-1", 0, len(fits.data)),
        ("big-1", 1, 2),
    ]


async def test_an_event_over_the_streams_max_msg_size_stops_the_forwarder_at_once() -> None:
    url, prefix = shared_url(), fresh_prefix()
    await create_small_stream(url, prefix, 4096)
    async with open_store("memory://") as store:
        await store.append("small-1", [NewEvent("Small", b"{}")])
        await store.append("big-1", [NewEvent("Big", b"x" * 5000, b'{"who": "ada"}')])
        async with JetStreamSink(url, subject=prefix + ".{category}", timeout=2.0) as sink:
            forwarder = Forwarder(store, sink, name="big", retry_for=30.0)
            started = time.monotonic()
            with pytest.raises(ProjectionFailed) as raised:
                await forwarder.run_until_idle()
            assert time.monotonic() - started < 5.0
            assert await forwarder.position() == 1  # stopped at big-1: small-1, before it, is acknowledged
        _small, big = [_message(_Bytes().decode(r)) async for r in store.read_all()]
    assert str(raised.value) == (
        "projection 'big' stopped at big-1 version 0 (position 2): Unpublishable: "
        + _over_max_msg_size(big, prefix, 4096)
    )
    assert [(m.stream, m.version) for m in await received(url, prefix)] == [("small-1", 0)]


async def test_a_publish_before_the_jetstream_stream_exists_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    """No JetStream stream takes the subject yet (nats-py: ``NoStreamResponseError``, the server's "no
    responders"): transient, retried until the stream is created, then the events arrive."""
    url, prefix = shared_url(), fresh_prefix()
    async with open_store("memory://") as store:
        await store.append("a-1", [NewEvent("T", b"1"), NewEvent("T", b"2")])
        async with JetStreamSink(url, subject=prefix + ".{category}", timeout=2.0) as sink:
            forwarder = Forwarder(store, sink, name="early", retry_for=30.0, first_backoff=0.05, max_backoff=0.1)
            with caplog.at_level(logging.WARNING, logger="epoch.forwarding"):
                running = asyncio.ensure_future(forwarder.run_until_idle())
                while not caplog.records:  # a first attempt failed, and is retried
                    assert not running.done(), running
                    await asyncio.sleep(0.02)
                await create_stream(url, prefix)
                await asyncio.wait_for(running, 10.0)
            assert await forwarder.position() == 2
    retried = (
        r"forwarder 'early': publishing a-1 version 0 failed \(nats: no response from stream\); retrying in 0\.\d\ds"
    )
    assert re.fullmatch(retried, caplog.records[0].getMessage()), caplog.records[0].getMessage()
    assert [(m.stream, m.version, m.data) for m in await received(url, prefix)] == [("a-1", 0, b"1"), ("a-1", 1, b"2")]
