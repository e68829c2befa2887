"""The explorer's page handlers (read-only GETs): streams, a stream, an event and its correlation chain,
the live log, projections, events per minute, and a decider's state at a version or time with its changes."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import markupsafe
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.templating import Jinja2Templates

from epoch import (
    CommandHandler,
    DecodeError,
    InvalidStreamName,
    InvalidVersion,
    RecordedEvent,
    StoreUnavailable,
    category_of,
)
from epoch.domain import initial_state_of
from epoch.web._activity import MAX_WINDOW_EVENTS, activity, chart_svg
from epoch.web._context import (
    ACTIVITY_MINUTES,
    CHAIN_LIMIT,
    MAX_ACTIVITY_MINUTES,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ChainRow,
    Explorer,
    _chain,
    _changes,
    _describe,
    _explorer,
    _instant,
    _int,
    _required,
    _stream_pages,
    _version_at,
)
from epoch.web._diff import Change
from epoch.web._views import event_view, link, state_json

__all__ = ["Pages"]


class Pages:
    def __init__(self, templates: Jinja2Templates, store_url: str) -> None:
        self.templates = templates
        self.store_url = store_url

    def render(
        self, request: Request, template: str, section: str, /, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(section=section, store_url=self.store_url)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    # -- errors ---------------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.error(request, exc.status_code, exc.detail, exc.headers)

    async def epoch_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, InvalidStreamName | InvalidVersion | ValueError):
            status = 400
        elif isinstance(exc, StoreUnavailable):
            status = 503
        else:
            status = 500
        return self.error(request, status, f"{type(exc).__name__}: {exc}")

    def error(self, request: Request, status: int, message: str, headers: Any = None) -> Response:
        reasons = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 503: "Store unavailable"}
        response = self.render(
            request,
            "error.html",
            "",
            status_code=status,
            status=status,
            reason=reasons.get(status, "Error"),
            message=message,
        )
        if headers:
            response.headers.update(headers)
        return response

    # -- streams --------------------------------------------------------------------------------

    async def streams(self, request: Request) -> Response:
        explorer = _explorer(request)
        q = request.query_params.get("q", "")
        match = request.query_params.get("match", "contains")
        if match not in ("contains", "prefix"):
            raise HTTPException(400, f"match must be 'contains' or 'prefix', not {match!r}")
        page = _int(request, "page", 1, minimum=1) or 1
        size = _int(request, "size", PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE) or PAGE_SIZE
        await explorer.index.refresh()
        found = explorer.index.find_streams(q, prefix=match == "prefix")
        pages = max(1, math.ceil(len(found) / size))
        if page > pages:
            raise HTTPException(404, f"page {page} is past the last page ({pages})")
        rows = []
        for summary in found[(page - 1) * size : page * size]:
            deleted = await explorer.store.stream_version(summary.name) is None
            rows.append({"summary": summary, "deleted": deleted})

        def page_link(n: int) -> str:
            return link("/streams", q=q or None, match=None if match == "contains" else match, page=n, size=size)

        return self.render(
            request,
            "streams.html",
            "streams",
            q=q,
            match=match,
            rows=rows,
            total=len(found),
            page=page,
            pages=pages,
            prev=page_link(page - 1) if page > 1 else None,
            next=page_link(page + 1) if page < pages else None,
        )

    async def stream(self, request: Request) -> Response:
        explorer = _explorer(request)
        name = _required(request, "name")
        from_version = _int(request, "from", 0) or 0
        size = _int(request, "size", PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE) or PAGE_SIZE
        await explorer.index.refresh()
        events = [
            event_view(await explorer.shown(e))
            async for e in explorer.store.read_stream(name, from_version=from_version, limit=size)
        ]
        summary = explorer.index.streams.get(name)
        version = await explorer.store.stream_version(name)
        if summary is None and version is None:
            raise HTTPException(404, f"no stream named {name!r}")
        handler = self._handler_for(explorer, name)

        def page_link(start: int) -> str:
            return link("/stream", name=name, **{"from": start}, size=None if size == PAGE_SIZE else size)

        shown = [v.event.version for v in events]
        older, newer = await _stream_pages(explorer, name, shown, from_version, size, version)
        return self.render(
            request,
            "stream.html",
            "streams",
            name=name,
            events=events,
            summary=summary,
            version=version,
            deleted=version is None,
            from_version=from_version,
            handler_category=handler.category if handler else None,
            entity_id=name.partition("-")[2],
            prev=None if older is None else page_link(older),
            next=None if newer is None else page_link(newer),
        )

    def _handler_for(self, explorer: Explorer, stream: str) -> CommandHandler[Any, Any, Any] | None:
        if "-" not in stream:
            return None
        return explorer.registered.handlers.get(category_of(stream))

    # -- one event and its correlation chain ----------------------------------------------------

    async def event(self, request: Request) -> Response:
        explorer = _explorer(request)
        raw = request.path_params["id"]
        try:
            event_id = uuid.UUID(raw)
        except ValueError:
            raise HTTPException(400, f"not an event id (a UUID): {raw!r}") from None
        event = await explorer.store.get_event(event_id)
        if event is None:
            raise HTTPException(404, f"no event with id {event_id}")
        view = event_view(await explorer.shown(event))
        cause = await self._event_by_text_id(explorer, view.causation_id)
        chain: list[ChainRow] = []
        chain_size = 0
        truncated = False
        if view.correlation_id is not None:
            await explorer.index.refresh()
            ids = explorer.index.correlated(view.correlation_id)
            truncated = len(ids) > CHAIN_LIMIT
            members = [e for e in [await explorer.store.get_event(i) for i in ids[:CHAIN_LIMIT]] if e is not None]
            if event.id not in {m.id for m in members}:
                members.append(event)  # appended after the index's last refresh
            chain = _chain(members)
            chain_size = len(members)
        handler = self._handler_for(explorer, event.stream)
        state_url = None
        if handler is not None:
            state_url = link(
                "/state", category=handler.category, id=event.stream.partition("-")[2], version=event.version
            )
        return self.render(
            request,
            "event.html",
            "streams",
            v=view,
            cause=cause,
            chain=chain,
            chain_size=chain_size,
            truncated=truncated,
            state_url=state_url,
        )

    async def _event_by_text_id(self, explorer: Explorer, text: str | None) -> RecordedEvent | None:
        if text is None:
            return None
        try:
            return await explorer.store.get_event(uuid.UUID(text))
        except ValueError:
            return None

    # -- the global log -------------------------------------------------------------------------

    async def log(self, request: Request) -> Response:
        """The global log, newest first: by default its last ``size`` events, live; ``before=P`` pages to
        the ``size`` events before position P, ``after=P`` to the ``size`` events after it."""
        explorer = _explorer(request)
        index = explorer.index
        after = _int(request, "after", None)
        before = _int(request, "before", None)
        if after is not None and before is not None:
            raise HTTPException(400, "give after or before, not both")
        size = _int(request, "size", PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE) or PAGE_SIZE
        await index.refresh()
        live = after is None and before is None
        if after is not None:
            start = after
        elif before is not None:
            start = index.position_before(before - 1, size) if before > 0 else 0
        else:
            start = index.tail_after(size)
        events = [event_view(await explorer.shown(e)) async for e in explorer.store.read_all(after=start, limit=size)]
        if before is not None:
            events = [v for v in events if v.event.position < before]
        newest = events[-1].event.position if events else start
        oldest = events[0].event.position if events else start + 1
        events.reverse()
        sized = {} if size == PAGE_SIZE else {"size": size}
        has_older = len(index.positions) > 0 and index.positions[0] < oldest
        older = link("/log", before=oldest, **sized) if has_older else None
        newer = None
        if not live and newest < index.position:
            newer = link("/log", after=newest, **sized)
        return self.render(
            request,
            "log.html",
            "log",
            events=events,
            head=index.position,
            live_url=link("/log/live", after=max(newest, index.position)) if live else None,
            prev=newer,
            next=older,
        )

    async def live(self, request: Request) -> Response:
        """Server-sent events: one ``append`` event (a rendered table row) per committed event."""
        explorer = _explorer(request)
        resume = request.headers.get("last-event-id", "")
        # A reconnecting browser sends back the id of the last event it got: one of the positions sent,
        # at most 20 ASCII digits (64 bits). Anything else did not come from here and is ignored
        # (str.isdigit alone also accepts "²", which int() refuses, and int() reads at most 4300 digits).
        sent_here = resume.isascii() and resume.isdigit() and len(resume) <= 20
        after = int(resume) if sent_here else _int(request, "after", None)
        if after is None:
            after = await explorer.store.head_position()
        row = self.templates.get_template("_row.html")

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n: live\n\n"
            events = explorer.store.subscribe(after)
            try:
                async for event in events:
                    html = row.render(v=event_view(await explorer.shown(event)))
                    # An event stream ends a line at CR or LF only (a row has neither: names hold no
                    # control character); str.splitlines() would also split inside a name at U+2028.
                    data = "".join(f"data: {line}\n" for line in html.split("\n"))
                    yield f"id: {event.position}\nevent: append\n{data}\n"
            finally:
                close = getattr(events, "aclose", None)  # every store's subscribe is an async generator
                if close is not None:
                    await close()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    # -- projections and deciders ---------------------------------------------------------------

    async def projections(self, request: Request) -> Response:
        explorer = _explorer(request)
        rows = await explorer.registered.status(explorer.store)
        return self.render(
            request, "projections.html", "projections", rows=rows, registered=bool(explorer.registered.runners)
        )

    async def deciders(self, request: Request) -> Response:
        explorer = _explorer(request)
        await explorer.index.refresh()
        deciders = []
        for category, handler in sorted(explorer.registered.handlers.items()):
            streams = [
                {"name": s.name, "entity": s.name.partition("-")[2], "version": s.last_version}
                for s in sorted(explorer.index.streams.values(), key=lambda s: s.name)
                if "-" in s.name and category_of(s.name) == category
            ]
            deciders.append({"category": category, "decider": _describe(handler.decider), "streams": streams})
        return self.render(request, "deciders.html", "deciders", deciders=deciders)

    async def state(self, request: Request) -> Response:
        explorer = _explorer(request)
        category = _required(request, "category")
        handler = explorer.registered.handlers.get(category)
        if handler is None:
            known = ", ".join(sorted(explorer.registered.handlers)) or "none; pass --app"
            raise HTTPException(404, f"no decider registered for category {category!r} (known: {known})")
        entity_id = _required(request, "id")
        version = _int(request, "version", None)
        at = _instant(request, "at")
        if version is not None and at is not None:
            raise HTTPException(400, "give version or at, not both")
        stream = handler.stream_for(entity_id)
        head = await explorer.store.stream_version(stream)
        if head is None:
            raise HTTPException(404, f"no stream named {stream!r}")
        if version is not None and version > head:
            raise HTTPException(404, f"{stream} has no version {version}: its last version is {head}")
        first = next(iter([r.version async for r in explorer.store.read_stream(stream, limit=1)]), None)
        if first is None:  # e.g. a max_age every event is past (a truncation or a delete hides the ones before)
            raise HTTPException(404, f"{stream} shows no event: its last version is {head}")
        if version is not None and version < first:
            raise HTTPException(404, f"{stream} does not show version {version}: its first version shown is {first}")
        if at is not None:
            version = await _version_at(explorer, stream, at)
        shown = head if version is None else version
        problem = None
        state: str | None = None
        changes: list[Change] | None = None
        try:
            # At a time, the state is state_at's own answer for it; _version_at said which version that is.
            current = await (handler.state_at(entity_id, at=at) if at else handler.state_at(entity_id, version=shown))
            state = state_json(current)
            before = initial_state_of(handler.decider)  # before the first version shown (it is folded from there)
            if shown > first:
                before = await handler.state_at(entity_id, shown - 1)
            changes = _changes(before, current)
        except (DecodeError, InvalidVersion) as exc:
            # An event the decider's codec cannot read (stored bytes are anyone's), or a version erased since
            # the checks above: say which, and keep the page, so the versions before it stay one click away.
            problem = f"{type(exc).__name__}: {exc}"
        event = next(iter([r async for r in explorer.store.read_stream(stream, from_version=shown, limit=1)]), None)
        low = max(first, shown - 10)
        return self.render(
            request,
            "state.html",
            "deciders",
            category=category,
            entity_id=entity_id,
            stream=stream,
            version=shown,
            at=at,
            head=head,
            first=first,
            versions=list(range(low, min(head, low + 20) + 1)),
            event=event,
            state=state,
            problem=problem,
            changes=changes,
        )

    # -- events per minute ----------------------------------------------------------------------

    async def activity(self, request: Request) -> Response:
        explorer = _explorer(request)
        category = request.query_params.get("category", "") or None
        minutes = _int(request, "minutes", ACTIVITY_MINUTES, minimum=1, maximum=MAX_ACTIVITY_MINUTES)
        assert minutes is not None
        data = await activity(explorer.store, datetime.now(UTC), minutes, category)
        return self.render(
            request,
            "activity.html",
            "activity",
            category=category or "",
            minutes=minutes,
            data=data,
            # Only numbers and times go into the SVG (never a name): it is safe to insert as markup.
            chart=markupsafe.Markup(chart_svg(data, label_every=max(1, minutes // 6))),
            cap=MAX_WINDOW_EVENTS,
        )
