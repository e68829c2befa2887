"""epoch with an OpenTelemetry SDK recording everything: the price of tracing, next to plain epoch.

``epoch bench --impls epoch,epoch-otel`` (or ``EPOCH_BENCH_OTEL=1``, which adds ``epoch-otel`` after
``epoch``) runs each workload on both in interleaved rounds, so ``round_ratios["epoch-otel"]`` of the
epoch result is the cost of recording. Plain epoch is the no-SDK path: the API installed (it is in the
dev group) but no provider set, which is the same code as without the extra (the handler holds no
telemetry either way).

Every span is sampled and handed to a batch span processor whose exporter drops it, and every metric
is aggregated by an in-memory reader: what a production set-up pays in the process, minus the network.
Workloads that run in subprocesses (``hot_stream`` across processes) record nothing there.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.backends import Backend
from benchmarks.epoch_side import EpochSide
from epoch import telemetry


class _Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class EpochOtelSide:
    """:class:`EpochSide` with :func:`epoch.telemetry.configure` set to an SDK around each workload."""

    impl = "epoch-otel"

    def __init__(self, backend: Backend) -> None:
        self.inner = EpochSide(backend)
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped()))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            # Handlers and runners read the setting when created, inside the workload: set it around it.
            telemetry.configure(self.tracer_provider, self.meter_provider)
            try:
                return await method(*args, **kwargs)
            finally:
                telemetry.configure()

        return recorded
