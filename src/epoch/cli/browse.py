"""``epoch streams``, ``epoch read STREAM`` and ``epoch tail [--follow]``: look into a store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
import typer

from epoch import RecordedEvent
from epoch._payload import escape_text, payload_of
from epoch.cli._options import JsonOption, StoreOption
from epoch.cli._stores import cli_store, fail, resolve, shown

_ENCODER = msgspec.json.Encoder()


def event_to_json(event: RecordedEvent) -> bytes:
    """A recorded event as one line of JSON; data and metadata as epoch._payload shows stored bytes."""
    return _ENCODER.encode(
        {
            "stream": event.stream,
            "version": event.version,
            "position": event.position,
            "id": str(event.id),
            "type": event.type,
            "recorded_at": event.recorded_at.isoformat(),
            "data": payload_of(event.data).to_json(),
            "metadata": payload_of(event.metadata).to_json(),
        }
    )


def event_line(event: RecordedEvent) -> str:
    """A recorded event as one line of text for people: names and data escaped, so none of it can break
    the line or send escape sequences to the terminal."""
    where = escape_text(f"{event.stream}@{event.version}")
    return f"{event.position:>8}  {where}  {escape_text(event.type)}  {payload_of(event.data).one_line()}"


def _echo_json(encoded: bytes) -> None:
    # As bytes: JSON is UTF-8 (RFC 8259) whatever the terminal's encoding, and bytes cannot fail to encode.
    typer.echo(encoded)


def register(app: typer.Typer) -> None:
    @app.command()
    def streams(
        store: StoreOption = None,
        as_json: JsonOption = False,
        category: Annotated[str | None, typer.Option(help="Only streams of this category.")] = None,
    ) -> None:
        """List streams with their version and event count (scans the log)."""

        async def run() -> list[dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            async with cli_store(store) as opened:
                async for event in opened.read_all(categories=category):
                    row = found.setdefault(event.stream, {"stream": event.stream, "events": 0})
                    row["events"] += 1
                    row["last_position"] = event.position
                for row in found.values():
                    row["version"] = await opened.stream_version(row["stream"])
            return list(found.values())

        rows = asyncio.run(run())
        if as_json:
            _echo_json(_ENCODER.encode(rows))
            return
        for row in rows:
            version = "deleted" if row["version"] is None else f"v{row['version']}"
            typer.echo(
                f"{escape_text(row['stream'])}  {version}  {row['events']} events  last position {row['last_position']}"
            )
        typer.echo(f"{len(rows)} streams")

    @app.command()
    def read(
        stream: str,
        store: StoreOption = None,
        as_json: JsonOption = False,
        from_version: Annotated[int | None, typer.Option("--from", help="First version to show.")] = None,
        backwards: Annotated[bool, typer.Option(help="Newest first.")] = False,
        limit: Annotated[int | None, typer.Option(help="At most this many events.")] = None,
    ) -> None:
        """Print one stream's events; a stream never written (or deleted) is an error."""

        async def run() -> list[RecordedEvent]:
            async with cli_store(store) as opened:
                events = [e async for e in opened.read_stream(stream, from_version, backwards, limit)]
                # Nothing to show is fine for a stream that exists (--from past its end); for one that
                # does not, an empty list would hide a typo in the name.
                if not events and await opened.stream_version(stream) is None:
                    fail(f"no stream {stream!r} in {shown(resolve(store))}")
                return events

        events = asyncio.run(run())
        if as_json:
            _echo_json(b"[" + b",".join(event_to_json(e) for e in events) + b"]")
        else:
            for event in events:
                typer.echo(event_line(event))

    @app.command()
    def tail(
        store: StoreOption = None,
        as_json: JsonOption = False,
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing new events as they commit.")
        ] = False,
        after: Annotated[int | None, typer.Option(help="Start after this position (default: the last 20).")] = None,
        category: Annotated[list[str] | None, typer.Option(help="Only these categories.")] = None,
    ) -> None:
        """Print the end of the global log (JSON lines with --json); --follow keeps going."""

        def show(event: RecordedEvent) -> None:
            if as_json:
                _echo_json(event_to_json(event))
            else:
                typer.echo(event_line(event))

        async def run() -> None:
            async with cli_store(store) as opened:
                start = after
                if start is None:
                    recent = [e async for e in opened.read_all(categories=category)][-20:]
                    start = recent[0].position - 1 if recent else 0
                reader = opened.subscribe(start, category) if follow else opened.read_all(start, categories=category)
                async for event in reader:
                    show(event)

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
