"""OpenTelemetry (docs/observability.md): spans, trace context in event metadata, metrics, and nothing at
all without an SDK. Recorded with the SDK's in-memory span exporter and metric reader, on real stores."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from epoch import CommandHandler, EventStore, WrongExpectedVersion, open_store, telemetry
from epoch.examples.users import AddUser, DuplicateName, UserAdded, UserService, codec, users
from epoch.examples.users.registry import name_claims_runner
from epoch.projections import ProjectionRunner
from epoch.records import EventEnvelope
from epoch.telemetry._store import TracedStore
from tests.conftest import url_for
from tests.telemetry_trace import console_spans, record_trace, span_tree

ROOT = Path(__file__).resolve().parent.parent


class Recorded:
    """What the SDK recorded: finished spans and collected metrics."""

    def __init__(self, exporter: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.exporter = exporter
        self.reader = reader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        [found] = [span for span in self.spans() if span.name == name]
        return found

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Each metric's points: (attributes, value) for sums and gauges, (attributes, count) for histograms."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = [
                        (dict(p.attributes or {}), getattr(p, "value", None) if hasattr(p, "value") else p.count)
                        for p in metric.data.data_points
                    ]
        return found


@pytest.fixture
def otel() -> Iterator[Recorded]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    telemetry.configure(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield Recorded(exporter, reader)
    telemetry.configure()


@pytest.fixture(params=["memory", "sqlite"])
async def traced_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_store(url_for(request.param, request, tmp_path)) as store:
        yield store


def system(store: EventStore) -> str:
    return "sqlite" if type(store).__name__ == "SQLiteEventStore" else "epoch.memory"


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C traceparent of a span: version 00, trace id, span id, flags (sampled, random trace id)."""
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{int(span.context.trace_flags):02x}"


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


async def test_a_command_is_a_span_with_its_reads_and_append_as_children(
    otel: Recorded, traced_store: EventStore
) -> None:
    result = await UserService(traced_store, "eu").add_user(AddUser("ada"))

    assert [s.name for s in otel.spans()] == ["read_stream users", "append users", "execute users"]
    command, read, append = otel.span("execute users"), otel.span("read_stream users"), otel.span("append users")
    assert command.kind == SpanKind.INTERNAL and parent_of(command) is None
    assert dict(command.attributes or {}) == {
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "epoch.command.type": "AddUser",
        "epoch.command.outcome": "appended",
        "epoch.command.attempts": 1,
        "epoch.command.conflicts": 0,
        "epoch.version": 0,
    }
    assert append.kind == SpanKind.CLIENT and parent_of(append) == span_id(command)
    assert dict(append.attributes or {}) == {
        "db.system.name": system(traced_store),
        "db.operation.name": "append",
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "epoch.events": 1,
        "epoch.position": 1,
    }
    assert parent_of(read) == span_id(command)
    assert dict(read.attributes or {}) == {
        "db.system.name": system(traced_store),
        "db.operation.name": "read_stream",
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "db.response.returned_rows": 0,
    }
    # The command's context is in the events' metadata, stored and returned alike (W3C traceparent).
    traceparent = traceparent_of(command)
    assert traceparent.endswith("-03")
    assert result.events[0].metadata["$traceparent"] == traceparent
    [stored] = [r async for r in traced_store.read_all()]
    assert json.loads(stored.metadata)["$traceparent"] == traceparent
    assert "$tracestate" not in json.loads(stored.metadata)

    metrics = otel.metrics()
    assert metrics["epoch.commands"] == [({"epoch.category": "users", "epoch.command.outcome": "appended"}, 1)]
    assert metrics["epoch.events.appended"] == [({"db.system.name": system(traced_store)}, 1)]
    assert metrics["db.client.operation.duration"] == [
        ({"db.system.name": system(traced_store), "db.operation.name": "read_stream"}, 1),
        ({"db.system.name": system(traced_store), "db.operation.name": "append"}, 1),
    ]
    assert "epoch.command.conflicts" not in metrics and "epoch.command.retries" not in metrics


async def test_a_conflict_is_counted_and_the_retry_shows_in_attempts(otel: Recorded, traced_store: EventStore) -> None:
    mine, theirs = UserService(traced_store, "eu"), UserService(traced_store, "eu")
    await mine.add_user(AddUser("ada"))  # mine caches the directory at version 0
    await theirs.add_user(AddUser("bob"))  # version 1: mine's cached state is stale
    otel.exporter.clear()

    result = await mine.add_user(AddUser("cy"))

    assert result.attempts == 2
    assert [s.name for s in otel.spans()] == ["append users", "read_stream users", "append users", "execute users"]
    command = otel.span("execute users")
    attributes = dict(command.attributes or {})
    assert (attributes["epoch.command.attempts"], attributes["epoch.command.conflicts"]) == (2, 1)
    refused = otel.spans()[0]
    assert refused.status.status_code == StatusCode.ERROR
    assert dict(refused.attributes or {})["error.type"] == "WrongExpectedVersion"
    metrics = otel.metrics()
    assert metrics["epoch.command.conflicts"] == [({"epoch.category": "users"}, 1)]
    assert metrics["epoch.command.retries"] == [({"epoch.category": "users"}, 1)]
    assert metrics["epoch.commands"] == [({"epoch.category": "users", "epoch.command.outcome": "appended"}, 3)]
    assert metrics["db.client.operation.duration"][-1] == (
        {"db.system.name": system(traced_store), "db.operation.name": "append", "error.type": "WrongExpectedVersion"},
        1,
    )


async def test_failed_commands_record_their_outcome_and_error(otel: Recorded, traced_store: EventStore) -> None:
    handler = CommandHandler(traced_store, users, "users", codec)
    await handler.execute("eu", AddUser("ada"))
    with pytest.raises(WrongExpectedVersion):
        await handler.execute("eu", AddUser("bob"), expected_version=5)
    with pytest.raises(DuplicateName):
        await handler.execute("eu", AddUser("ada"))

    conflict, rejected = [s for s in otel.spans() if s.name == "execute users"][1:]
    assert dict(conflict.attributes or {}) == {
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "epoch.command.type": "AddUser",
        "epoch.command.outcome": "conflict",
        "epoch.command.attempts": 0,  # the explicit guard refused it before any decision
        "epoch.command.conflicts": 0,
        "error.type": "WrongExpectedVersion",
    }
    assert conflict.status.status_code == StatusCode.ERROR
    assert [event.name for event in conflict.events] == ["exception"]
    assert dict(rejected.attributes or {}) == {
        "epoch.stream": "users-eu",
        "epoch.category": "users",
        "epoch.command.type": "AddUser",
        "epoch.command.outcome": "failed",
        "epoch.command.attempts": 1,
        "epoch.command.conflicts": 0,
        "error.type": "DuplicateName",
    }
    assert otel.metrics()["epoch.commands"] == [
        ({"epoch.category": "users", "epoch.command.outcome": "appended"}, 1),
        ({"epoch.category": "users", "epoch.command.outcome": "conflict", "error.type": "WrongExpectedVersion"}, 1),
        ({"epoch.category": "users", "epoch.command.outcome": "failed", "error.type": "DuplicateName"}, 1),
    ]


async def test_the_trace_continues_from_a_command_through_the_saga_it_causes(
    otel: Recorded, traced_store: EventStore
) -> None:
    await UserService(traced_store, "eu").add_user(AddUser("ada"))
    await name_claims_runner(traced_store).run_until_idle()

    command, batch = otel.span("execute users"), otel.span("process user-name-claims")
    react, saga_command = otel.span("react user-name-claims"), otel.span("execute usernames")
    saga_append = otel.span("append usernames")
    assert parent_of(batch) == span_id(command)
    assert parent_of(react) == span_id(batch)
    assert parent_of(saga_command) == span_id(react)
    assert parent_of(saga_append) == span_id(saga_command)
    assert {trace_id(s) for s in otel.spans()} == {trace_id(command)}
    assert batch.kind == SpanKind.CONSUMER
    assert dict(batch.attributes or {}) == {
        "messaging.system": "epoch",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "user-name-claims",
        "messaging.batch.message_count": 1,
        "epoch.projection": "user-name-claims",
        "epoch.checkpoint": 1,
    }
    assert dict(react.attributes or {}) == {
        "epoch.saga": "user-name-claims",
        "epoch.stream": "users-eu",
        "epoch.event.type": "UserAdded",
        "epoch.position": 1,
    }
    # The reservation carries the saga command's own context onwards.
    reserved = [r async for r in traced_store.read_all()][-1]
    assert json.loads(reserved.metadata)["$traceparent"] == traceparent_of(saga_command)

    metrics = otel.metrics()
    assert metrics["epoch.projection.events"] == [({"epoch.projection": "user-name-claims"}, 1)]
    # After the batch at position 1 the log holds the reservation (position 2): one event of lag.
    assert metrics["epoch.projection.lag"] == [({"epoch.projection": "user-name-claims"}, 1)]
    [(labels, age)] = metrics["epoch.projection.lag.duration"]
    assert labels == {"epoch.projection": "user-name-claims"} and 0 <= age < 60


class Names:
    name = "names"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, envelope: EventEnvelope[Any]) -> None:
        self.seen.append(envelope.type)


async def test_a_batch_of_several_traces_starts_its_own_linked_to_each(
    otel: Recorded, traced_store: EventStore
) -> None:
    service = UserService(traced_store, "eu")
    await service.add_user(AddUser("ada"))
    await service.add_user(AddUser("bob"))
    projection = Names()
    await ProjectionRunner(traced_store, codec, [projection]).run_until_idle()

    assert projection.seen == ["UserAdded", "UserAdded"]
    commands = [s for s in otel.spans() if s.name == "execute users"]
    batch = otel.span("process names")
    assert parent_of(batch) is None and trace_id(batch) not in {trace_id(c) for c in commands}
    assert [link.context.span_id for link in batch.links] == [span_id(c) for c in commands]
    assert dict(batch.attributes or {})["messaging.batch.message_count"] == 2


async def test_events_without_or_with_a_malformed_traceparent_give_a_root_batch(
    otel: Recorded, traced_store: EventStore
) -> None:
    await traced_store.append("users-eu", [codec.encode(UserAdded("1", "ada"), {"$traceparent": "00-nonsense"})])
    await traced_store.append("users-us", [codec.encode(UserAdded("2", "bob"))])
    await ProjectionRunner(traced_store, codec, [Names()], batch_size=1).run_until_idle()

    batches = [s for s in otel.spans() if s.name == "process names"]
    assert [(parent_of(b), list(b.links)) for b in batches] == [(None, []), (None, [])]
    assert len({trace_id(b) for b in batches}) == 2


async def test_without_an_sdk_nothing_is_wrapped_or_recorded(traced_store: EventStore) -> None:
    # No configure() and the API's default providers: the handler keeps the store itself.
    assert telemetry.current() is None
    handler = CommandHandler(traced_store, users, "users", codec)
    assert handler.store is traced_store
    result = await handler.execute("eu", AddUser("ada"))
    assert "$traceparent" not in result.events[0].metadata


def test_without_the_extra_nothing_of_opentelemetry_is_imported() -> None:
    # A process where opentelemetry cannot be imported (as without the extra) runs commands and sagas.
    script = """
import asyncio, sys
sys.modules["opentelemetry"] = None
from epoch import open_store, telemetry
from epoch.examples.users import AddUser, UserService
from epoch.examples.users.registry import name_claims_runner

async def main():
    async with open_store("memory://") as store:
        await UserService(store, "eu").add_user(AddUser("ada"))
        await name_claims_runner(store).run_until_idle()
        print(telemetry.current(), await store.head_position())

asyncio.run(main())
print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout == "None 2\n[]\n"


def test_configure_with_the_global_providers_set_records_through_them() -> None:
    script = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider
from epoch import telemetry
print(telemetry.current())
trace.set_tracer_provider(TracerProvider())
made = telemetry.current()
print(type(made).__name__, made is telemetry.current())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout == "None\nTelemetry True\n"


async def test_the_docs_show_the_trace_the_example_records(tmp_path: Path) -> None:
    console = io.StringIO()
    spans = await record_trace(f"sqlite:///{tmp_path / 'epoch.db'}", console)
    page = (ROOT / "docs" / "observability.md").read_text()
    assert f"```text\n{span_tree(spans)}\n```" in page
    # The console exporter's JSON on the page is of the same span: name, kind and attributes.
    shown = json.loads("{" + page.split("\n```text\n{", 1)[1].split("\n```", 1)[0])
    [written] = [span for span in console_spans(console.getvalue()) if span["name"] == "execute users"]
    for key in ("name", "kind", "attributes", "parent_id", "status", "events", "links"):
        assert shown[key] == written[key], key


async def test_the_traced_store_ends_a_read_left_early_and_passes_the_rest_through(
    otel: Recorded, traced_store: EventStore
) -> None:
    handler = CommandHandler(traced_store, users, "users", codec)
    await handler.execute("eu", AddUser("ada"))
    await handler.execute("us", AddUser("bob"))
    wrapped = handler.store
    assert isinstance(wrapped, TracedStore)
    assert (await wrapped.head_position(), await wrapped.stream_version("users-eu")) == (2, 0)
    assert wrapped.from_url.__self__ is type(traced_store)  # not in the protocol: the store's own classmethod

    events = wrapped.read_all()
    assert isinstance(events, AsyncGenerator)
    first = await anext(events)
    await events.aclose()

    assert first.stream == "users-eu"
    read = otel.span("read_all")
    assert dict(read.attributes or {}) == {
        "db.system.name": system(traced_store),
        "db.operation.name": "read_all",
        "db.response.returned_rows": 1,
    }
    assert read.end_time is not None and parent_of(read) is None
