"""The explorer as an ASGI app: routes, the store's lifetime, and security headers. The pages are in
``_pages``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from epoch import EpochError, open_store
from epoch.web._apps import load_factories, register
from epoch.web._context import HERE, Explorer, templates
from epoch.web._index import LogIndex
from epoch.web._pages import Pages

__all__ = ["create_app"]

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def create_app(store_url: str | None, app_spec: str | Sequence[str] | None = None) -> Starlette:
    """The explorer as an ASGI app over the store at ``store_url`` (opened when the app starts).

    ``app_spec`` is one ``module:attr`` or several (a sequence, or comma-separated), as for
    ``epoch projections --app``; ``None`` reads ``$EPOCH_APP``. Each names a function called with the
    store that returns projection runners and command handlers to show. Raises ``ConfigurationError``
    when one cannot be imported.
    """
    factories = load_factories(app_spec)
    pages = Pages(templates(), _without_password(store_url or os.environ.get("EPOCH_STORE") or "sqlite:///epoch.db"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_store(store_url) as store:
            app.state.explorer = Explorer(store, LogIndex(store), register(factories, store))
            yield

    routes = [
        Route("/", _home),
        Route("/streams", pages.streams, name="streams"),
        Route("/stream", pages.stream, name="stream"),
        Route("/events/{id}", pages.event, name="event"),
        Route("/log", pages.log, name="log"),
        Route("/log/live", pages.live, name="live"),
        Route("/projections", pages.projections, name="projections"),
        Route("/deciders", pages.deciders, name="deciders"),
        Route("/state", pages.state, name="state"),
        Route("/activity", pages.activity, name="activity"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: pages.http_error, EpochError: pages.epoch_error},
    )
    app.add_middleware(_SecurityHeaders)
    return app


def _without_password(url: str) -> str:
    """The store URL as shown in the page header: a password is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _home(request: Request) -> Response:
    return RedirectResponse("/streams", status_code=302)


class _SecurityHeaders:
    """Adds a strict Content-Security-Policy (no inline script) and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
