"""The trace docs/observability.md shows: a Users command, the name-claims saga it causes, as a span tree.

``python -m tests.telemetry_trace`` prints the tree and, below it, the command's span as the SDK's
console exporter writes it; tests/test_telemetry.py checks that the page holds exactly this tree.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from epoch import open_store, telemetry
from epoch.examples.users import AddUser, UserService
from epoch.examples.users.registry import name_claims_runner


def span_tree(spans: Sequence[ReadableSpan]) -> str:
    """One line per span, ``name [KIND] {attributes}``, indented under its parent, children by start time."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        by_parent.setdefault(parent, []).append(span)
    ids = {span.context.span_id for span in spans if span.context is not None}
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attributes = ", ".join(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        links = f" links={len(span.links)}" if span.links else ""
        lines.append(f"{'  ' * depth}{span.name} [{span.kind.name}]{links} {{{attributes}}}")
        assert span.context is not None
        for child in by_parent.get(span.context.span_id, []):
            walk(child, depth + 1)

    roots = [s for parent, group in by_parent.items() if parent is None or parent not in ids for s in group]
    for root in roots:
        walk(root, 0)
    return "\n".join(lines)


async def record_trace(url: str, console: io.StringIO | None = None) -> list[ReadableSpan]:
    """Add user ``ada`` to directory ``eu``, then let the name-claims saga reserve the name.

    Every span is also written to ``console`` by the SDK's console exporter, when given.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if console is not None:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=console)))
    telemetry.configure(provider)
    try:
        async with open_store(url) as store:
            await UserService(store, "eu").add_user(AddUser("ada"))
            await name_claims_runner(store).run_until_idle()
    finally:
        telemetry.configure()
    return list(exporter.get_finished_spans())


def console_spans(text: str) -> list[dict[str, object]]:
    """The JSON objects the console exporter wrote, one per span."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while (index := text.find("{", index)) != -1:
        value, index = decoder.raw_decode(text, index)
        found.append(value)
    return found


def main() -> None:
    console = io.StringIO()
    with tempfile.TemporaryDirectory() as directory:
        spans = asyncio.run(record_trace(f"sqlite:///{Path(directory) / 'epoch.db'}", console))
    print(span_tree(spans))
    print()
    [command] = [span for span in console_spans(console.getvalue()) if span["name"] == "execute users"]
    print(json.dumps(command, indent=4))


if __name__ == "__main__":
    main()
