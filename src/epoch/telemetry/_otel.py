"""The instruments and the spans around commands, projection batches and saga reactions.

Imported only by :func:`epoch.telemetry.current`, and only when ``opentelemetry-api`` is installed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from epoch.errors import WrongExpectedVersion
from epoch.records import EventEnvelope
from epoch.stores import EventStore
from epoch.telemetry import TRACEPARENT, TRACESTATE
from epoch.telemetry._store import TracedStore, untraced

if TYPE_CHECKING:
    from uuid import UUID

    from epoch._results import Job
    from epoch.commands import CommandHandler, ExecuteResult, _Missing
    from epoch.records import ExpectedVersionLike

__all__ = ["LAG_GAUGE_LIMIT", "CommandProbe", "ProjectionProbe", "Telemetry", "active_providers"]

# The semantic conventions' buckets for db.client.operation.duration (seconds).
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# How often a projection counts the events after its checkpoint (the lag gauge), and how many at most.
_LAG_SAMPLE_SECONDS = 1.0
LAG_GAUGE_LIMIT = 10_000

_PROPAGATOR = TraceContextTextMapPropagator()


class CommandProbe:
    """The execution running in this context: its job, once checked, counts its decisions and conflicts."""

    __slots__ = ("job",)

    def __init__(self) -> None:
        self.job: Job[Any] | None = None  # None until the command passed its checks (or replayed a result)

    def counts(self) -> tuple[int, int]:
        """Decisions and refused appends so far (0, 0 before the job exists)."""
        job = self.job
        return (0, 0) if job is None else (job.decisions, job.conflicts)


_COMMAND: ContextVar[CommandProbe | None] = ContextVar("epoch_command", default=None)


def active_providers(
    tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
) -> tuple[trace.TracerProvider | None, metrics.MeterProvider | None]:
    """The given (else the global) providers, each ``None`` when it is only the API's no-op default."""
    tracer_provider = tracer_provider or trace.get_tracer_provider()
    meter_provider = meter_provider or metrics.get_meter_provider()
    if isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        tracer_provider = None
    # The API's stand-in before an SDK is set is a private class (_ProxyMeterProvider): named, not imported.
    if isinstance(meter_provider, metrics.NoOpMeterProvider) or type(meter_provider).__name__ == "_ProxyMeterProvider":
        meter_provider = None
    return tracer_provider, meter_provider


def context_of(metadata: Mapping[str, Any]) -> Context | None:
    """The trace context an event's metadata carries, or ``None`` (absent or malformed)."""
    traceparent = metadata.get(TRACEPARENT)
    if not isinstance(traceparent, str):
        return None
    carrier = {"traceparent": traceparent}
    if isinstance(tracestate := metadata.get(TRACESTATE), str):
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


class Telemetry:
    """The tracer and the metric instruments of one pair of providers (a missing one records nothing)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None):
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer("epoch")
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("epoch")
        self.commands = meter.create_counter("epoch.commands", "{command}", "Commands executed, by outcome")
        self.conflicts = meter.create_counter(
            "epoch.command.conflicts", "{conflict}", "Appends of commands refused by a concurrent write"
        )
        self.retries = meter.create_counter("epoch.command.retries", "{retry}", "Decisions after a command's first")
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            "s",
            "Duration of event store operations",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.appended = meter.create_counter("epoch.events.appended", "{event}", "Events appended")
        self.handled = meter.create_counter("epoch.projection.events", "{event}", "Events handled by projections")
        self.lag = meter.create_gauge("epoch.projection.lag", "{event}", "Events in the log after a checkpoint")
        self.lag_duration = meter.create_gauge(
            "epoch.projection.lag.duration", "s", "Age of the last event a projection handled, when it handled it"
        )

    def traced(self, store: EventStore) -> EventStore:
        """``store`` with a span and a duration for each append and read."""
        return TracedStore(store, self)

    def projection(self, name: str, partition: int | None = None) -> ProjectionProbe:
        """The probe of projection ``name`` (of one of its partitions, under a ``PartitionedRunner``)."""
        return ProjectionProbe(self, name, partition)

    # -- commands ---------------------------------------------------------------------------------

    @staticmethod
    def outside() -> bool:
        """Whether no traced execution is running in this context (the handler's own call is inside one)."""
        return _COMMAND.get() is None

    async def execute(
        self,
        handler: CommandHandler[Any, Any, Any],
        id: object,
        command: object,
        expected_version: ExpectedVersionLike | _Missing,
        metadata: Mapping[str, Any] | None,
        services: object,
        command_id: str | UUID | None,
        correlation_id: str | UUID | None,
        causation_id: str | UUID | None,
    ) -> ExecuteResult[Any, Any]:
        """``handler.execute`` inside a span ``execute {category}``, counted in the command metrics."""
        stream = handler.stream_for(id)
        category = handler.category
        probe = CommandProbe()
        token = _COMMAND.set(probe)
        outcome, attempts, conflicts, error = "failed", 0, 0, ""
        attributes = {"epoch.stream": stream, "epoch.category": category, "epoch.command.type": type(command).__name__}
        try:
            with self.tracer.start_as_current_span(f"execute {category}", attributes=attributes) as span:
                try:
                    result = await handler.execute(
                        id,
                        command,
                        expected_version,
                        metadata=metadata,
                        services=services,
                        command_id=command_id,
                        correlation_id=correlation_id,
                        causation_id=causation_id,
                    )
                except BaseException as exc:
                    error = type(exc).__qualname__
                    if isinstance(exc, WrongExpectedVersion):
                        outcome = "conflict"
                    elif isinstance(exc, asyncio.CancelledError):
                        outcome = "cancelled"
                    # A failure has no ExecuteResult: its job's counts say how far it got (0 decisions:
                    # refused before deciding, e.g. a guard or StreamClosed).
                    attempts, conflicts = probe.counts()
                    span.set_attributes(
                        {
                            "epoch.command.outcome": outcome,
                            "epoch.command.attempts": attempts,
                            "epoch.command.conflicts": conflicts,
                            "error.type": error,
                        }
                    )
                    raise
                outcome, attempts = ("appended" if result.events else "unchanged"), result.attempts
                conflicts = probe.counts()[1]
                span.set_attributes(
                    {
                        "epoch.command.outcome": outcome,
                        "epoch.command.attempts": attempts,
                        "epoch.command.conflicts": conflicts,
                    }
                )
                if result.version is not None:  # None: a new stream that nothing was written to
                    span.set_attribute("epoch.version", result.version)
                return result
        finally:
            _COMMAND.reset(token)
            labels = {"epoch.category": category, "epoch.command.outcome": outcome}
            if error:
                labels["error.type"] = error
            self.commands.add(1, labels)
            if conflicts:
                self.conflicts.add(conflicts, {"epoch.category": category})
            # Every decision after the first is a retry, whether the command then succeeded or not.
            retries = attempts - 1
            if retries > 0:
                self.retries.add(retries, {"epoch.category": category})

    def begin(self, job: Job[Any]) -> None:
        """Follow ``job`` (its counts go on the span) and put the trace context into its metadata."""
        if (probe := _COMMAND.get()) is not None:
            probe.job = job
        self.inject(job.metadata)

    def inject(self, metadata: dict[str, Any]) -> None:
        """Put the current span's W3C trace context into an event's ``metadata``."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        if (traceparent := carrier.get("traceparent")) is not None:
            metadata[TRACEPARENT] = traceparent
            if tracestate := carrier.get("tracestate"):
                metadata[TRACESTATE] = tracestate

    # -- sagas ------------------------------------------------------------------------------------

    @contextmanager
    def react(self, saga: str, envelope: EventEnvelope[Any]) -> Iterator[None]:
        """A span ``react {saga}`` for the commands one event causes, in the trace of the event's command.

        Its parent is the current span (the batch) when that is in the event's trace already, else the
        context in the event's metadata, with a link to the current span.
        """
        parent: Context | None = None
        links: list[Link] = []
        current = trace.get_current_span().get_span_context()
        event_context = context_of(envelope.metadata)
        if event_context is not None:
            event_trace = trace.get_current_span(event_context).get_span_context().trace_id
            if event_trace != current.trace_id:
                parent = event_context
                links = [Link(current)] if current.is_valid else []
        attributes: dict[str, str | int] = {
            "epoch.saga": saga,
            "epoch.stream": envelope.stream,
            "epoch.event.type": envelope.type,
            "epoch.position": envelope.position,
        }
        with self.tracer.start_as_current_span(f"react {saga}", context=parent, links=links, attributes=attributes):
            yield


class ProjectionProbe:
    """One projection's (or one partition's) batch spans and lag gauges."""

    def __init__(self, telemetry: Telemetry, name: str, partition: int | None = None) -> None:
        self.telemetry = telemetry
        self.name = name
        # Partitions advance apart: each has its own lag, so each is its own series.
        self.labels: dict[str, str | int] = {"epoch.projection": name}
        if partition is not None:
            self.labels["epoch.partition"] = partition
        self._head = 0  # the log's head at the last count
        self._behind = 0  # the events counted after the checkpoint then
        self._handled = 0  # events handled since
        self._sampled_at = -_LAG_SAMPLE_SECONDS

    @contextmanager
    def batch(self, envelopes: Sequence[EventEnvelope[Any]], checkpoint: int) -> Iterator[None]:
        """A span ``process {projection}`` around handling ``envelopes`` and saving ``checkpoint``.

        The span continues the trace of the events' command when they all carry the same trace context;
        a batch of several traces starts its own, linked to each of them.
        """
        parent: Context | None = None
        links: list[Link] = []
        traceparents = {envelope.metadata.get(TRACEPARENT) for envelope in envelopes}
        contexts = [c for m in _one_per_traceparent(envelopes) if (c := context_of(m)) is not None]
        if len(traceparents) == 1 and len(contexts) == 1:
            parent = contexts[0]
        else:
            links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts]
        attributes: dict[str, str | int] = {
            "messaging.system": "epoch",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": self.name,
            "messaging.batch.message_count": len(envelopes),
            **self.labels,
            "epoch.checkpoint": checkpoint,
        }
        name = f"process {self.name}"
        with self.telemetry.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
        ):
            yield
        self.telemetry.handled.add(len(envelopes), self.labels)
        self._handled += len(envelopes)
        if envelopes:
            age = (datetime.now(UTC) - envelopes[-1].recorded_at).total_seconds()
            self.telemetry.lag_duration.set(max(age, 0.0), self.labels)

    async def measure_lag(self, store: EventStore, position: int) -> None:
        """Record how many events the log holds past ``position``, counting them at most once a second.

        Positions are not a count: PostgreSQL's (``xid << 32 | ordinal``) and KurrentDB's (commit
        positions) are sparse, and erasure leaves gaps on every store. So the events after the
        checkpoint are read and counted, up to :data:`LAG_GAUGE_LIMIT` (a gauge at the limit means at
        least that many). Between two counts the gauge goes down by the events this probe handled, and
        reads 0 once the checkpoint reaches the head counted to. Best effort: the batch is committed
        already, so a store that cannot answer leaves the last count.
        """
        now = time.monotonic()
        if now - self._sampled_at >= _LAG_SAMPLE_SECONDS:
            with suppress(Exception):
                self._head, self._behind = await _events_after(untraced(store), position)
                self._handled = 0
                self._sampled_at = now
        lag = 0 if position >= self._head else max(self._behind - self._handled, 0)
        self.telemetry.lag.set(lag, self.labels)


async def _events_after(store: EventStore, position: int) -> tuple[int, int]:
    """The log's head, and how many events it holds after ``position`` (at most :data:`LAG_GAUGE_LIMIT`)."""
    head = await store.head_position()
    if head <= position:
        return head, 0
    count = 0
    async for _ in store.read_all(after=position, limit=LAG_GAUGE_LIMIT):  # read to its end: nothing to close
        count += 1
    return head, count


def _one_per_traceparent(envelopes: Sequence[EventEnvelope[Any]]) -> list[Mapping[str, Any]]:
    seen: dict[object, Mapping[str, Any]] = {}
    for envelope in envelopes:
        seen.setdefault(envelope.metadata.get(TRACEPARENT), envelope.metadata)
    return list(seen.values())
