"""OpenTelemetry spans and metrics for commands, store calls, projection batches and saga commands.

Install the ``otel`` extra (``opentelemetry-api``) and set up an OpenTelemetry SDK: handlers, runners and
sagas created afterwards record spans and metrics through the global tracer and meter providers, or
through the ones given to :func:`configure`. Whether anything is recorded is decided once, when a
handler or runner is created: without the extra, or without an SDK (only the API's default no-op
providers), they hold ``None`` and pay one ``is None`` check per command or batch, and nothing of
OpenTelemetry is imported.

A command's trace context travels in the metadata of the events it appends (``$traceparent`` and
``$tracestate``, W3C Trace Context), so the projection batch that handles them and the saga command they
cause continue the command's trace. docs/observability.md lists every span, attribute and metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from epoch.telemetry._otel import Telemetry

__all__ = ["TRACEPARENT", "TRACESTATE", "configure", "current"]

TRACEPARENT = "$traceparent"
"""The metadata key holding the W3C ``traceparent`` of the span that appended an event."""
TRACESTATE = "$tracestate"
"""The metadata key holding the W3C ``tracestate`` beside it (only when it is not empty)."""

_providers: tuple[TracerProvider | None, MeterProvider | None] = (None, None)
_made: tuple[object, object, Telemetry] | None = None


def configure(tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None) -> None:
    """Record through these providers from now on; ``None`` (the default) means OpenTelemetry's global one.

    Handlers, runners and sagas read the setting when they are created: configure first, then create
    them. ``configure()`` with no argument goes back to the global providers.
    """
    global _providers
    _providers = (tracer_provider, meter_provider)


def current() -> Telemetry | None:
    """The instruments to record with, or ``None`` when nothing would be recorded (no extra, no SDK)."""
    global _made
    try:
        from epoch.telemetry import _otel
    except ImportError:  # the otel extra is not installed
        return None
    tracer_provider, meter_provider = _otel.active_providers(*_providers)
    if tracer_provider is None and meter_provider is None:
        return None
    if _made is None or _made[0] is not tracer_provider or _made[1] is not meter_provider:
        _made = (tracer_provider, meter_provider, _otel.Telemetry(tracer_provider, meter_provider))
    return _made[2]
