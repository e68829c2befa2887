"""``epoch serve``: every page of the explorer over a SQLite store filled by the Users example.

Requests go through httpx's ASGI transport inside the app's lifespan (no server); the live log's
server-sent events are read straight from the ASGI app. tests/test_web_browser.py drives a real browser.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import html
import importlib
import json
import math
import re
import sys
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import markupsafe
import pytest
from typer.testing import CliRunner

from epoch import ConfigurationError, EventStore, MissingDependency, NewEvent, open_store
from epoch.cli import app as cli_app
from epoch.examples.users import AddUser, UpdateUser, UserService
from epoch.examples.users.projections import runner
from epoch.examples.users.registry import name_claims_runner
from epoch.web import create_app
from epoch.web._activity import Activity, Bar, activity, chart_svg, nice_ceiling, window_start
from epoch.web._context import CHAIN_INDENTS, CHAIN_LIMIT, _changes
from epoch.web._diff import Change, diff, path_text, value_text
from epoch.web._views import state_json
from tests.payloads import SHOWN_AS_BYTES, SHOWN_AS_JSON, plant_old_metadata

APPS = [
    "epoch.examples.users.projections:runner",
    "epoch.examples.users.registry:name_claims_runner",
    "epoch.examples.users.service:UserService",
    "epoch.examples.users.registry:registry_handler",
]
WEIRD = '<script>alert("x")</script> it\'s a/b?c#d e&f%2F'
BINARY = b"\xff\x00not json"
EVIL_JSON = b'{"html": "</pre><script>alert(1)</script>"}'
SRC = Path(__file__).resolve().parent.parent / "src" / "epoch" / "web"


async def seed(url: str) -> dict[str, Any]:
    """The Users example (two directories, a rename, the name registry's saga, the read model), plus
    a stream whose name needs escaping and quoting, holding bytes that are not JSON."""
    async with open_store(url) as store:
        main = UserService(store, "main")
        ada = await main.add_user(AddUser("ada"))
        await main.add_user(AddUser("grace"))
        ada_id = ada.events[0].data.user_id
        await main.update_user(UpdateUser(ada_id, "ada lovelace"))
        await UserService(store, "eu").add_user(AddUser("linus"))
        await name_claims_runner(store).run_until_idle()
        await runner(store).run_until_idle()
        await store.append(WEIRD, [NewEvent("Weird<b>", BINARY, b'{"note": "<i>x</i>"}')])
        await store.append("notes-1", [NewEvent("Note", EVIL_JSON)])
        return {"ada_event": ada.events[0], "ada_id": ada_id}


@pytest.fixture
async def seeded(sqlite_url: str) -> dict[str, Any]:
    return {"url": sqlite_url, **(await seed(sqlite_url))}


@pytest.fixture
async def client(seeded: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(seeded["url"], APPS)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
    ):
        yield client


def esc(text: str) -> str:
    return str(markupsafe.escape(text))


def hrefs(page: str, css_class: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'class="{css_class}" href="([^"]*)"', page)]


# -- streams ----------------------------------------------------------------------------------


async def test_streams_lists_every_stream_escaped(client: httpx.AsyncClient) -> None:
    response = await client.get("/streams")
    assert response.status_code == 200
    page = response.text
    for name in ("users-main", "users-eu", "usernames-ada", "usernames-ada lovelace", "notes-1"):
        assert f">{esc(name)}</a>" in page
    assert "<script>alert" not in page
    assert esc(WEIRD) in page
    assert "/stream?name=" + quote(WEIRD, safe="").replace("%20", "+") in hrefs(page, "stream")
    assert "8 streams" in page


async def test_root_redirects_to_streams(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 302 and response.headers["location"] == "/streams"


async def test_search_by_substring_and_prefix(client: httpx.AsyncClient) -> None:
    contains = (await client.get("/streams", params={"q": "ADA"})).text
    assert "usernames-ada</a>" in contains and "usernames-ada lovelace</a>" in contains
    assert "users-main</a>" not in contains
    assert "2 streams matching" in contains

    prefix = (await client.get("/streams", params={"q": "users", "match": "prefix"})).text
    assert "users-main</a>" in prefix and "users-eu</a>" in prefix and "usernames-ada</a>" not in prefix

    nothing = (await client.get("/streams", params={"q": "<nope>"})).text
    assert "No streams match “&lt;nope&gt;”" in nothing


async def test_streams_are_paged(client: httpx.AsyncClient) -> None:
    first = (await client.get("/streams", params={"size": 3})).text
    assert "page 1 of 3" in first
    [next_page] = re.findall(r'rel="next" href="([^"]*)"', first)
    second = (await client.get(html.unescape(next_page))).text
    assert "page 2 of 3" in second
    names = re.findall(r'class="stream" href="[^"]*">([^<]*)</a>', first + second)
    assert len(names) == len(set(names)) == 6
    assert names == sorted(names, key=lambda n: html.unescape(n))
    past = await client.get("/streams", params={"size": 3, "page": 4})
    assert past.status_code == 404 and "past the last page (3)" in past.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page": "abc"}, "page must be a whole number, not &#39;abc&#39;"),
        ({"page": "0"}, "page must be at least 1, not 0"),
        ({"size": "0"}, "size must be between 1 and 500, not 0"),
        ({"size": "100000"}, "size must be between 1 and 500"),
        ({"match": "regex"}, "match must be &#39;contains&#39; or &#39;prefix&#39;"),
    ],
)
async def test_bad_streams_input_is_a_clear_400(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/streams", params=params)
    assert response.status_code == 400
    assert message in response.text


# -- one stream -------------------------------------------------------------------------------


async def test_stream_shows_pretty_json_metadata_and_state_links(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    page = (await client.get("/stream", params={"name": "users-main"})).text
    assert "version 2 · 3 events" in page
    assert "UserAdded" in page and "UserUpdated" in page
    assert f"{{\n  &#34;user_id&#34;: &#34;{seeded['ada_id']}&#34;,\n  &#34;name&#34;: &#34;ada&#34;\n}}" in page
    assert "$correlation_id" in page and "$causation_id" in page
    assert hrefs(page, "state-link") == [f"/state?category=users&id=main&version={v}" for v in range(3)]


async def test_stream_with_a_hostile_name_and_binary_data(client: httpx.AsyncClient) -> None:
    response = await client.get("/stream?name=" + quote(WEIRD, safe=""))
    assert response.status_code == 200
    page = response.text
    assert "<script>" not in page and "<b>" not in page and "<i>x" not in page
    assert esc(WEIRD) in page and "Weird&lt;b&gt;" in page
    assert base64.b64encode(BINARY).decode() in page  # not JSON: shown as base64, never dropped
    assert "data is not JSON: 10 bytes, shown as base64" in page
    assert "&lt;i&gt;x&lt;/i&gt;" in page  # the metadata is JSON, escaped

    evil = (await client.get("/stream", params={"name": "notes-1"})).text
    assert "<script>alert(1)" not in evil and "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in evil


async def test_stream_paging(client: httpx.AsyncClient) -> None:
    first = (await client.get("/stream", params={"name": "users-main", "size": 2})).text
    assert 'id="v0"' in first and 'id="v1"' in first and 'id="v2"' not in first
    [next_page] = re.findall(r'rel="next" href="([^"]*)"', first)
    second = (await client.get(html.unescape(next_page))).text
    assert 'id="v2"' in second and 'id="v1"' not in second
    assert 'rel="next"' not in second and 'rel="prev"' in second


def shown_versions(page: str) -> list[int]:
    return [int(v) for v in re.findall(r'<tr class="event" id="v(\d+)"', page)]


async def walk(client: httpx.AsyncClient, url: str, rel: str = "next") -> list[list[int]]:
    """The versions of each page from ``url`` on, following ``rel`` links to the end."""
    pages: list[list[int]] = []
    next_url: str | None = url
    while next_url is not None:
        page = (await client.get(next_url)).text
        pages.append(shown_versions(page))
        next_url = pager_links(page).get(rel)
        assert len(pages) < 10, pages
    return pages


async def test_stream_paging_over_a_truncated_or_limited_stream(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    # The pager pages from what it showed, not from version arithmetic: a stream that starts later (a
    # truncation, max_count) gave the same first events on the pages before its start.
    async with open_store(seeded["url"]) as store:
        await store.append("paged-1", [NewEvent("T", b"{}") for _ in range(12)])  # versions 0..11
        await store.truncate_before("paged-1", 6)
        await store.append("paged-2", [NewEvent("T", b"{}") for _ in range(12)])
        await store.set_stream_limits("paged-2", max_count=4)  # reads 8..11
    assert await walk(client, "/stream?name=paged-1&size=3") == [[6, 7, 8], [9, 10, 11]]
    last = (await client.get("/stream?name=paged-1&from=9&size=3")).text
    assert pager_links(last) == {"prev": "/stream?name=paged-1&from=6&size=3"}
    assert pager_links((await client.get("/stream?name=paged-1&size=3")).text) == {
        "next": "/stream?name=paged-1&from=9&size=3"
    }
    assert await walk(client, "/stream?name=paged-1&from=11&size=3", "prev") == [[11], [8, 9, 10], [6, 7, 8]]
    assert await walk(client, "/stream?name=paged-2&size=3") == [[8, 9, 10], [11]]
    assert await walk(client, "/stream?name=paged-2&from=11&size=3", "prev") == [[11], [8, 9, 10]]
    assert await walk(client, "/stream?name=paged-2&from=2&size=2") == [[8, 9], [10, 11]]


async def test_unknown_stream_is_404_and_bad_input_400(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/stream", params={"name": "users-<nobody>"})
    assert unknown.status_code == 404
    assert "no stream named &#39;users-&lt;nobody&gt;&#39;" in unknown.text
    missing = await client.get("/stream")
    assert missing.status_code == 400 and "the query parameter &#39;name&#39; is required" in missing.text
    negative = await client.get("/stream", params={"name": "users-main", "from": "-1"})
    assert negative.status_code == 400 and "from must be at least 0" in negative.text
    assert (await client.get("/no/such/page")).status_code == 404


async def test_deleted_stream_says_so(seeded: dict[str, Any]) -> None:
    async with open_store(seeded["url"]) as store:
        await store.delete_stream("users-eu")
    app = create_app(seeded["url"], APPS)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
    ):
        page = (await client.get("/stream", params={"name": "users-eu"})).text
        assert "The stream was deleted" in page
        assert "deleted</span>" in (await client.get("/streams", params={"q": "users-eu"})).text


# -- one event and its correlation chain ------------------------------------------------------


async def test_event_page_and_correlation_chain(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    ada = seeded["ada_event"]
    page = (await client.get(f"/events/{ada.id}")).text
    assert "UserAdded" in page and "users-main" in page
    assert f'href="/state?category=users&amp;id=main&amp;version={ada.version}"' in page
    # The registry saga reacted to UserAdded(ada) with ReserveName: NameReserved is caused by it.
    chain = page[page.index('id="chain"') :]
    assert "2 events share this correlation id" in page
    links = hrefs(chain, "chain-link")
    assert links[0] == f"/events/{ada.id}"
    assert chain_rows(chain) == [(0, "UserAdded"), (1, "NameReserved")]  # NameReserved under its cause
    assert '<li class="depth-0 current" aria-current="true" data-depth="0">' in chain

    reserved = (await client.get(links[1])).text
    assert "usernames-ada" in reserved
    assert hrefs(reserved, "cause") == [f"/events/{ada.id}"]  # follow the causation link back
    assert (
        '<li class="depth-1 current" aria-current="true" data-depth="1">\n    <a class="chain-link" href="' + links[1]
        in reserved
    )


def chain_rows(page: str) -> list[tuple[int, str]]:
    """The chain's rows: (depth, event type), in the order shown."""
    found = re.findall(
        r'<li class="depth-(\d+)[^"]*"[^>]* data-depth="(\d+)">\s*<a class="chain-link"[^>]*>([^<]*)<', page
    )
    assert all(int(indent) == min(int(depth), CHAIN_INDENTS) for indent, depth, _ in found)
    return [(int(depth), html.unescape(name)) for _, depth, name in found]


def chained(steps: int, correlation: str, cause: str) -> list[NewEvent]:
    """``steps`` events, each caused by the one before (the first by ``cause``)."""
    events = []
    for i in range(steps):
        metadata = {"$correlation_id": correlation, "$causation_id": cause}
        events.append(NewEvent(f"Step{i}", b"{}", json.dumps(metadata).encode()))
        cause = str(events[-1].id)
    return events


@pytest.mark.parametrize("steps", [300, CHAIN_LIMIT + 20])
async def test_a_deep_causation_chain_is_indented_rows(
    client: httpx.AsyncClient, seeded: dict[str, Any], steps: int
) -> None:
    # Nested lists rendered by a recursive template failed past about 250 levels (RecursionError): the
    # chain is one flat list of rows, indented by depth with a class per level up to CHAIN_INDENTS.
    correlation = "7d1b8c2e-0000-4000-8000-000000000001"
    events = chained(steps, correlation, correlation)
    async with open_store(seeded["url"]) as store:
        await store.append("chain-1", events)
    response = await client.get(f"/events/{events[-1].id}")  # the deepest: kept even past the limit
    assert response.status_code == 200
    page = response.text
    shown = min(steps, CHAIN_LIMIT)
    rows = chain_rows(page[page.index('id="chain"') :])
    expected = [(i, f"Step{i}") for i in range(shown)]
    if steps > CHAIN_LIMIT:  # appended past the limit: its cause is not shown, so it is a root
        expected.append((0, f"Step{steps - 1}"))
        assert f"Only the first {shown + 1} events are shown." in page
    assert rows == expected
    assert f'<li class="depth-{CHAIN_INDENTS}" data-depth="{CHAIN_INDENTS + 1}">' in page
    assert f"· depth {CHAIN_INDENTS + 1}</span>" in page and f"· depth {CHAIN_INDENTS}</span>" not in page
    css = (SRC / "static" / "explorer.css").read_text()
    assert all(f"ul.chain li.depth-{n} " in css for n in range(1, CHAIN_INDENTS + 1))


async def test_events_that_cause_each_other_are_all_shown(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    # Stored metadata is anyone's: a loop of causes has no root, yet every event of it is shown once.
    correlation = "7d1b8c2e-0000-4000-8000-000000000002"
    first, second = NewEvent("First", b"{}"), NewEvent("Second", b"{}")
    loop = [
        NewEvent(
            "First",
            b"{}",
            json.dumps({"$correlation_id": correlation, "$causation_id": str(second.id)}).encode(),
            id=first.id,
        ),
        NewEvent(
            "Second",
            b"{}",
            json.dumps({"$correlation_id": correlation, "$causation_id": str(first.id)}).encode(),
            id=second.id,
        ),
        NewEvent("Alone", b"{}", json.dumps({"$correlation_id": correlation}).encode()),
    ]
    async with open_store(seeded["url"]) as store:
        await store.append("loop-1", loop)
    page = (await client.get(f"/events/{loop[2].id}")).text
    assert "3 events share this correlation id" in page
    assert chain_rows(page[page.index('id="chain"') :]) == [(0, "Alone"), (0, "First"), (1, "Second")]


async def test_event_bad_and_unknown_ids(client: httpx.AsyncClient) -> None:
    bad = await client.get("/events/not-a-uuid")
    assert bad.status_code == 400 and "not an event id (a UUID): &#39;not-a-uuid&#39;" in bad.text
    unknown = await client.get("/events/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404


async def test_event_without_correlation(client: httpx.AsyncClient) -> None:
    page = (await client.get("/stream", params={"name": "notes-1"})).text
    [event_link] = re.findall(r'class="event-link" href="([^"]*)"', page)
    event_page = (await client.get(event_link)).text
    assert "This event has no <code>$correlation_id</code>" in event_page


# -- the global log ---------------------------------------------------------------------------


def positions_of(page: str) -> list[int]:
    return [int(p) for p in re.findall(r'data-position="(\d+)"', page)]


def pager_links(page: str) -> dict[str, str]:
    return {rel: html.unescape(href) for rel, href in re.findall(r'rel="(prev|next)" href="([^"]*)"', page)}


async def test_log_opens_at_the_newest_events_and_pages_to_older_ones(client: httpx.AsyncClient) -> None:
    tail = (await client.get("/log")).text
    assert positions_of(tail) == list(range(10, 0, -1))  # newest first: all 10 fit on one page
    assert 'data-live-url="/log/live?after=10"' in tail
    assert pager_links(tail) == {}
    assert "<script>alert" not in tail

    newest = (await client.get("/log", params={"size": 4})).text
    assert positions_of(newest) == [10, 9, 8, 7]
    assert 'data-live-url="/log/live?after=10"' in newest
    assert pager_links(newest) == {"next": "/log?before=7&size=4"}  # "older →" only: this is the newest
    older = (await client.get(pager_links(newest)["next"])).text
    assert positions_of(older) == [6, 5, 4, 3]
    assert "data-live-url" not in older
    assert pager_links(older) == {"prev": "/log?after=6&size=4", "next": "/log?before=3&size=4"}
    oldest = (await client.get(pager_links(older)["next"])).text
    assert positions_of(oldest) == [2, 1]
    assert pager_links(oldest) == {"prev": "/log?after=2&size=4"}
    back = (await client.get(pager_links(older)["prev"])).text
    assert positions_of(back) == [10, 9, 8, 7] and pager_links(back) == {"next": "/log?before=7&size=4"}

    first = (await client.get("/log", params={"after": 0, "size": 4})).text
    assert positions_of(first) == [4, 3, 2, 1]
    assert pager_links(first) == {"prev": "/log?after=4&size=4"}
    assert positions_of((await client.get("/log", params={"before": 1})).text) == []
    assert (await client.get("/log", params={"after": "x"})).status_code == 400
    both = await client.get("/log", params={"after": 1, "before": 5})
    assert both.status_code == 400 and '<p class="error" id="error">give after or before, not both</p>' in both.text


async def test_live_log_sends_events_appended_later(seeded: dict[str, Any]) -> None:
    app = create_app(seeded["url"], APPS)
    async with app.router.lifespan_context(app), open_store(seeded["url"]) as writer:
        head = await writer.head_position()
        body = bytearray()
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200
                assert (b"content-type", b"text/event-stream; charset=utf-8") in message["headers"]
            elif message["type"] == "http.response.body":
                body.extend(message["body"])
                if b"event: append" in body:
                    done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/log/live",
            "raw_path": b"/log/live",
            "root_path": "",
            "query_string": f"after={head}".encode(),
            "headers": [(b"host", b"explorer")],
            "client": ("127.0.0.1", 1),
            "server": ("explorer", 80),
        }
        serving = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.2)
        await writer.append("users-late", [NewEvent("Late<One>", b"{}")])
        await asyncio.wait_for(serving, 10)
    text = body.decode()
    assert f"id: {head + 1}\nevent: append\ndata: <tr" in text
    assert "Late&lt;One&gt;" in text and "<One>" not in text


# -- projections and deciders -----------------------------------------------------------------


async def test_projections_show_checkpoints_and_lag(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    async with open_store(seeded["url"]) as store:
        await UserService(store, "main").add_user(AddUser("barbara"))
        head = await store.head_position()
    page = (await client.get("/projections")).text
    rows = re.findall(
        r"<tr class=\"(ok|failing)\">\s*<td>([^<]*)</td>\s*<td class=\"num\">(\d+)</td>\s*"
        r"<td class=\"num\">(\d+)</td>\s*<td class=\"num lag\">(\d+)</td>",
        page,
    )
    by_name = {name: (int(checkpoint), int(shown_head), int(lag)) for _, name, checkpoint, shown_head, lag in rows}
    assert set(by_name) == {"user-directory", "user-name-claims"}
    for checkpoint, shown_head, lag in by_name.values():
        assert shown_head == head and lag == 1 and checkpoint < head
    assert "behind" in page


async def test_projections_without_app_show_saved_checkpoints(seeded: dict[str, Any]) -> None:
    app = create_app(seeded["url"], [])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
    ):
        page = (await client.get("/projections")).text
        assert "Every checkpoint saved in the store" in page
        assert "<td>user-directory</td>" in page and "<td>user-name-claims</td>" in page
        assert "No deciders registered" in (await client.get("/deciders")).text
        missing = await client.get("/state", params={"category": "users", "id": "main"})
        assert missing.status_code == 404 and "known: none; pass --app" in missing.text


async def test_deciders_list_registered_categories(client: httpx.AsyncClient) -> None:
    page = (await client.get("/deciders")).text
    assert "<h2>users</h2>" in page and "<h2>usernames</h2>" in page
    assert "/state?category=users&id=main" in hrefs(page, "state-link")
    assert "/state?category=usernames&id=ada+lovelace" in hrefs(page, "state-link")


async def test_decider_state_at_any_version(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    ada_id = seeded["ada_id"]
    at0 = (await client.get("/state", params={"category": "users", "id": "main", "version": 0})).text
    state0 = html.unescape(re.search(r'<pre class="json" id="state">(.*?)</pre>', at0, re.S)[1])  # type: ignore[index]
    assert '"name": "ada"' in state0 and "grace" not in state0
    assert '<strong aria-current="true">v0</strong>' in at0

    now = (await client.get("/state", params={"category": "users", "id": "main"})).text
    state = html.unescape(re.search(r'<pre class="json" id="state">(.*?)</pre>', now, re.S)[1])  # type: ignore[index]
    assert f'"{ada_id}": {{\n      "user_id": "{ada_id}",\n      "name": "ada lovelace"' in state
    assert '"name": "grace"' in state
    assert 'id="state-version">2<' in now and "UserUpdated</a>" in now

    owner = (await client.get("/state", params={"category": "usernames", "id": "ada"})).text
    assert f"&#34;{ada_id}&#34;" in owner


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        (
            {"category": "users", "id": "main", "version": "9"},
            404,
            "users-main has no version 9: its last version is 2",
        ),
        ({"category": "users", "id": "main", "version": "-1"}, 400, "version must be at least 0"),
        ({"category": "users", "id": "main", "version": "two"}, 400, "version must be a whole number"),
        ({"category": "users", "id": "nobody"}, 404, "no stream named &#39;users-nobody&#39;"),
        ({"category": "<x>", "id": "main"}, 404, "no decider registered for category &#39;&lt;x&gt;&#39;"),
        ({"category": "users"}, 400, "the query parameter &#39;id&#39; is required"),
    ],
)
async def test_bad_state_requests(client: httpx.AsyncClient, params: dict[str, str], status: int, message: str) -> None:
    response = await client.get("/state", params=params)
    assert response.status_code == status
    assert message in response.text


def state_of(page: str) -> str:
    found = re.search(r'<pre class="json" id="state">(.*?)</pre>', page, re.S)
    assert found is not None, page[-800:]
    return html.unescape(found[1])


def changes_of(page: str) -> list[str]:
    """The state page's changes, one line each, as text."""
    found = re.search(r'<ul class="diff" id="diff">(.*?)</ul>', page, re.S)
    if found is None:
        return []
    return [html.unescape(re.sub(r"<[^>]+>", "", li)).strip() for li in re.findall(r"<li[^>]*>(.*?)</li>", found[1])]


async def test_decider_state_at_a_time(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    async with open_store(seeded["url"]) as store:
        times = [e.recorded_at async for e in store.read_stream("users-main")]
        handler = UserService(store, "main").handler
        states = [state_json(await handler.state_at("main", version=v)) for v in range(3)]
    assert times == sorted(times) and len(times) == 3
    for version, when in enumerate(times):
        # At the instant an event was recorded, it is in; the same instant in another zone is the same.
        expected = max(v for v, t in enumerate(times) if t <= when)  # equal times: the later event is in too
        for text in (when.isoformat(), when.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()):
            page = (await client.get("/state", params={"category": "users", "id": "main", "at": text})).text
            assert f'<span id="state-version">{expected}</span>' in page, (version, text)
            assert state_of(page) == states[expected]
            assert f'<span id="state-at">At {when.isoformat(sep=" ", timespec="milliseconds")} its last event' in page
    late = (await client.get("/state", params={"category": "users", "id": "main", "at": "2999-01-01T00:00:00Z"})).text
    assert '<span id="state-version">2</span>' in late and state_of(late) == states[2]

    early = await client.get("/state", params={"category": "users", "id": "main", "at": "2020-01-01T00:00:00Z"})
    first = times[0].isoformat(sep=" ", timespec="milliseconds")
    assert early.status_code == 404
    assert (
        '<p class="error" id="error">users-main has no event recorded at or before 2020-01-01 00:00:00.000+00:00: '
        f"its first event was recorded at {first}</p>"
    ) in early.text


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (
            "2026-12-01T10:00:00",
            "at must name its time zone (e.g. 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00), "
            "not &#39;2026-12-01T10:00:00&#39;",
        ),
        (
            "yesterday",
            "at must be an ISO-8601 instant (e.g. 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00), "
            "not &#39;yesterday&#39;",
        ),
        ("0001-01-01T00:00:00+01:00", "at is out of range in UTC, not &#39;0001-01-01T00:00:00+01:00&#39;"),
    ],
)
async def test_a_naive_or_malformed_time_is_a_clear_400(client: httpx.AsyncClient, at: str, message: str) -> None:
    response = await client.get("/state", params={"category": "users", "id": "main", "at": at})
    assert response.status_code == 400
    assert f'<p class="error" id="error">{message}</p>' in response.text
    both = await client.get(
        "/state", params={"category": "users", "id": "main", "at": "2026-12-01T10:00Z", "version": 1}
    )
    assert both.status_code == 400 and '<p class="error" id="error">give version or at, not both</p>' in both.text


async def test_the_state_page_shows_what_changed_from_the_version_before(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    ada = seeded["ada_id"]
    pages = [
        (await client.get("/state", params={"category": "users", "id": "main", "version": v})).text for v in range(3)
    ]
    grace = re.findall(r'"user_id": "([0-9a-f]+)"', state_of(pages[1]))
    [grace_id] = [g for g in grace if g != ada]
    assert "<h2>Changes from the initial state</h2>" in pages[0]
    # An id that starts with a letter is a .name step, one that starts with a digit a ["…"] one (tested below).
    at_ada, at_grace = path_text(("users", ada)), path_text(("users", grace_id))
    assert changes_of(pages[0]) == [f'added {at_ada} {{"name": "ada", "user_id": "{ada}"}}']
    assert "<h2>Changes from version 0</h2>" in pages[1]
    assert changes_of(pages[1]) == [f'added {at_grace} {{"name": "grace", "user_id": "{grace_id}"}}']
    assert changes_of(pages[2]) == [f'changed {at_ada}.name "ada" → "ada lovelace"']
    # A scalar state (the name registry's owner): the whole state changes, from null.
    owner = (await client.get("/state", params={"category": "usernames", "id": "ada", "version": 0})).text
    assert changes_of(owner) == [f'changed $ null → "{ada}"']


async def test_the_state_page_of_a_stream_that_no_longer_shows_its_first_versions(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    """After a truncation (or limits, or a delete and re-creation), the versions before the first one the
    stream shows have no state: they are not linked, asking for one is a 404, and the first version shown
    is compared with the initial state (it is folded from there)."""
    async with open_store(seeded["url"]) as store:
        await store.truncate_before("users-main", 1)
    first = await client.get("/state", params={"category": "users", "id": "main", "version": 1})
    assert first.status_code == 200
    assert "<h2>Changes from the initial state</h2>" in first.text
    [grace_id] = re.findall(r'"user_id": "([0-9a-f]+)"', state_of(first.text))  # ada was added at version 0
    assert changes_of(first.text) == [
        f'added {path_text(("users", grace_id))} {{"name": "grace", "user_id": "{grace_id}"}}'
    ]
    assert 'href="/state?category=users&amp;id=main&amp;version=0"' not in first.text
    assert (
        '<strong aria-current="true">v1</strong> <a href="/state?category=users&amp;id=main&amp;version=2">v2</a>'
        in first.text
    )
    hidden = await client.get("/state", params={"category": "users", "id": "main", "version": 0})
    assert hidden.status_code == 404
    assert "users-main does not show version 0: its first version shown is 1" in hidden.text
    now = await client.get("/state", params={"category": "users", "id": "main"})
    assert now.status_code == 200 and "<h2>Changes from version 1</h2>" in now.text
    async with open_store(seeded["url"]) as store:
        await store.set_stream_limits("users-main", max_age=timedelta(microseconds=1))  # every event is older
    gone = await client.get("/state", params={"category": "users", "id": "main"})
    assert gone.status_code == 404 and "users-main shows no event: its last version is 2" in gone.text


def test_diff_of_json_trees() -> None:
    assert diff({"a": 1, "b": [1, 2], "c": {"d": None}}, {"a": 1, "b": [1, 2], "c": {"d": None}}) == []
    assert diff({"a": 1, "gone": "x"}, {"a": 2, "new": [1]}) == [
        Change("changed", ("a",), 1, 2),
        Change("removed", ("gone",), old="x"),
        Change("added", ("new",), new=[1]),
    ]
    assert diff({"l": [1, 2, 3]}, {"l": [1, 5]}) == [
        Change("changed", ("l", 1), 2, 5),
        Change("removed", ("l", 2), old=3),
    ]
    assert diff([{"x": 1}], [{"x": 1}, {"y": 2}]) == [Change("added", (1,), new={"y": 2})]
    # 1 == 1.0 == True in Python; as JSON they differ, so each is a change.
    assert diff({"n": 1}, {"n": 1.0}) == [Change("changed", ("n",), 1, 1.0)]
    assert diff([1], [True]) == [Change("changed", (0,), 1, True)]
    assert diff({"a": {"b": 1}}, {"a": [1]}) == [Change("changed", ("a",), {"b": 1}, [1])]
    assert diff(None, "x") == [Change("changed", (), None, "x")]
    assert diff({"deep": {"er": {"est": 1}}}, {"deep": {"er": {"est": 2}}}) == [
        Change("changed", ("deep", "er", "est"), 1, 2)
    ]


def test_paths_and_values_as_text() -> None:
    assert path_text(()) == "$"
    assert path_text(("users", "a b", 0, "name", "_x1")) == '$.users["a b"][0].name._x1'
    assert path_text(('say "hi"', "1st", "é")) == '$["say \\"hi\\""]["1st"]["é"]'
    assert value_text({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert value_text("x" * 300) == '"' + "x" * 199 + "… (302 characters)"


async def test_a_state_change_that_cannot_be_compared_is_said_so(seeded: dict[str, Any]) -> None:
    huge = 10**5000  # more digits than Python turns into text: listed, shown as a placeholder
    assert _changes({"n": huge}, {"n": 1}) == [Change("changed", ("n",), huge, 1)]
    assert value_text(huge) == "<a int that cannot be shown>"
    assert value_text({"n": huge}) == "<a dict that cannot be shown>"
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert _changes(deep, [deep]) is None


# -- events per minute ------------------------------------------------------------------------


def counts_by_minute(times: list[datetime], end: datetime, minutes: int) -> list[int]:
    """The expected bars, counted the plain way."""
    since = end - timedelta(minutes=minutes)
    counts = [0] * minutes
    for t in times:
        if t >= since:
            counts[min(int((t - since).total_seconds() // 60), minutes - 1)] += 1
    return counts


async def test_activity_page_counts_events_per_minute(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    async with open_store(seeded["url"]) as store:
        events = [e async for e in store.read_all()]
    response = await client.get("/activity")
    assert response.status_code == 200
    page = response.text
    bars = [int(n) for n in re.findall(r'<rect class="bar" data-count="(\d+)"', page)]
    ends = re.findall(r"up to (\d{4}-\d\d-\d\d \d\d:\d\d:00\.000\+00:00) UTC", page)
    assert len(ends) == 1
    end = datetime.fromisoformat(ends[0])
    assert bars == counts_by_minute([e.recorded_at for e in events], end, 60)
    assert sum(bars) == 10 and '<p class="summary" id="activity-summary">10 events in the last 60 minutes' in page
    assert '<svg class="chart"' in page and "UTC, one bar a minute</text>" in page

    users = (await client.get("/activity", params={"category": "users", "minutes": 5})).text
    in_users = [e.recorded_at for e in events if e.stream.startswith("users-")]
    assert [int(n) for n in re.findall(r'data-count="(\d+)"', users)] == counts_by_minute(
        in_users, datetime.fromisoformat(re.findall(r"up to (\S+ \S+) UTC", users)[0]), 5
    )
    assert f"{len(in_users)} events in the last 5 minutes" in users and len(in_users) == 4
    assert '<code class="category">users</code>' in users

    bad = await client.get("/activity", params={"category": "a-b"})
    assert bad.status_code == 400
    assert (
        '<p class="error" id="error">InvalidStreamName: invalid stream name &#39;a-b&#39;: a category contains no '
        "&#39;-&#39;</p>"
    ) in bad.text
    too_long = await client.get("/activity", params={"minutes": 1441})
    assert too_long.status_code == 400 and "minutes must be between 1 and 1440, not 1441" in too_long.text


async def test_the_window_is_found_by_a_few_seeks_and_only_its_events_are_read(store: EventStore) -> None:
    for _ in range(30):
        await store.append("old-1", [NewEvent("Old", b"{}") for _ in range(10)])
    await asyncio.sleep(0.05)  # the window starts strictly after every old event
    for _ in range(5):
        await store.append("new-1", [NewEvent("New", b"{}")])
    events = [e async for e in store.read_all()]
    old, new = events[:300], events[300:]
    assert len(new) == 5 and old[-1].recorded_at < new[0].recorded_at
    after, seeks = await window_start(store, new[0].recorded_at)
    assert after == old[-1].position
    # The search runs over positions: where they are dense (memory, SQLite: 1, 2, 3 ...) it takes about
    # 2 * log2(events); PostgreSQL's are sparse 64-bit numbers (xid << 32 | ordinal), so at most 2 * 64.
    dense = [e.position for e in events] == list(range(1, 306))
    assert seeks <= (2 * 9 + 2 if dense else 2 * 64 + 2), seeks
    assert [e.position async for e in store.read_all(after=after)] == [e.position for e in new]

    now = datetime.now(UTC)
    everything = await activity(store, now, 60)
    assert (everything.total, everything.read, everything.truncated) == (305, 305, False)
    # The newest event, the strides back (64, 128, 256) while they stay after position 0, then position 0 itself.
    if dense:
        assert everything.seeks == 1 + math.ceil(math.log2(len(events) / 64)) + 1 == 5
    else:
        assert everything.seeks <= 2 * 64 + 2, everything.seeks
    only_new = await activity(store, now, 60, category="new")
    assert (only_new.total, only_new.read) == (5, 5)
    assert [b.count for b in only_new.bars] == counts_by_minute([e.recorded_at for e in new], only_new.end, 60)
    future = await activity(store, now + timedelta(hours=2), 60)
    assert (future.total, future.read, future.seeks) == (0, 0, 1)  # the head's newest event is already too old


def test_the_chart_draws_one_bar_a_minute_with_axis_labels() -> None:
    start = datetime(2026, 12, 1, 9, 58, tzinfo=UTC)
    bars = [Bar(start + timedelta(minutes=i), n) for i, n in enumerate([0, 3, 7, 1])]
    svg = chart_svg(Activity(bars, start + timedelta(minutes=4), seeks=3, read=11, truncated=False), label_every=2)
    rects = re.findall(
        r'<rect class="bar" data-count="(\d+)" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)">', svg
    )
    # The y axis tops at 10 (the next of 1, 2, 5, 10 ... above 7): 192 pixels high.
    assert rects == [("0", "204.0", "0.0"), ("3", "146.4", "57.6"), ("7", "69.6", "134.4"), ("1", "184.8", "19.2")]
    assert re.findall(r"<title>([^<]*)</title>", svg) == ["09:58: 0", "09:59: 3", "10:00: 7", "10:01: 1"]
    labels = re.findall(r'<text class="axis"[^>]*>([^<]*)</text>', svg)
    assert labels == ["0", "5", "10", "09:58", "10:00", "UTC, one bar a minute"]
    assert [nice_ceiling(n) for n in (0, 1, 2, 3, 7, 10, 11, 99, 101, 4000)] == [1, 1, 2, 5, 10, 10, 20, 100, 200, 5000]


# -- the app itself ---------------------------------------------------------------------------


async def test_read_only_and_locked_down(client: httpx.AsyncClient) -> None:
    assert (await client.post("/streams")).status_code == 405
    response = await client.get("/streams")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/static/explorer.css")).status_code == 200
    assert (await client.get("/static/live.js")).status_code == 200


def test_a_bad_app_spec_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as missing:
        create_app("memory://", "nope.nowhere:x")
    assert str(missing.value) == "cannot load 'nope.nowhere:x': No module named 'nope'"
    with pytest.raises(ConfigurationError) as malformed:
        create_app("memory://", "epoch.examples.users")
    assert str(malformed.value) == "--app must look like module:attr, not 'epoch.examples.users'"


async def test_an_app_returning_something_else_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPOCH_APP", "epoch.examples.users.domain:UserState")
    app = create_app("memory://")
    with pytest.raises(ConfigurationError) as info:
        async with app.router.lifespan_context(app):
            pass
    assert (
        str(info.value)
        == "--app 'epoch.examples.users.domain:UserState' returned UserState: expected a ProjectionRunner, SagaRunner, CommandHandler, an object with a .handler, or a list of these"
    )


def test_serve_reports_a_bad_app(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{tmp_path}/x.db", "--app", "nope:x"])
    # A ConfigurationError, printed as every EpochError is: one line on stderr, exit status 1.
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: cannot load 'nope:x': No module named 'nope'\n"


def test_missing_web_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "epoch.web" or m.startswith("epoch.web.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(MissingDependency) as info:
        importlib.import_module("epoch.web")
    assert str(info.value) == (
        "starlette is not installed: pip install '.[web]' in an epoch checkout (or the wheel with [web])"
    )


def test_templates_and_static_files_ship_in_the_package() -> None:
    package = resources.files("epoch.web")
    for name in ("base.html", "streams.html", "stream.html", "event.html", "log.html", "state.html"):
        assert (package / "templates" / name).is_file(), name
    assert (package / "static" / "explorer.css").is_file()


def test_web_calls_only_the_public_api() -> None:
    private = ("epoch.stores._", "epoch.commands", "epoch.cache", "epoch.projections._", "epoch.cli._")
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("epoch"):
                assert not node.module.startswith(private), (path.name, node.module)


def test_the_header_never_shows_a_store_password() -> None:
    from epoch.web.app import _without_password

    assert _without_password("postgresql://ada:s3cret@db:5432/epoch") == "postgresql://ada:***@db:5432/epoch"
    assert _without_password("sqlite:///epoch.db") == "sqlite:///epoch.db"


# -- stored bytes that are not JSON (issue 8 item 7) ------------------------------------------


def preview_of(page: str) -> list[str]:
    return [html.unescape(p) for p in re.findall(r'<pre class="preview" data-kind="preview">(.*?)</pre>', page, re.S)]


def base64_of(page: str) -> list[str]:
    return re.findall(r'<pre class="base64" data-kind="base64">([^<]*)</pre>', page)


@pytest.fixture
async def hostile(seeded: dict[str, Any], tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """The seeded store plus one stream per SHOWN_AS_BYTES entry, the SHOWN_AS_JSON payloads, metadata no
    current epoch writes (planted in the SQLite file), and an event the Users decider cannot decode."""
    async with open_store(seeded["url"]) as store:
        ids = {}
        for i, (name, raw) in enumerate(SHOWN_AS_BYTES.items()):
            event = NewEvent("Odd", raw)
            await store.append(f"bytes-{i}", [event])
            ids[name] = event.id
        await store.append("json-1", [NewEvent("Fine", raw) for raw in SHOWN_AS_JSON])
        await store.append("json-2", [NewEvent("Fine", '{"a": "\u202e\u0085\u200b\U000e0001 ok"}'.encode())])
        await store.append("users-main", [NewEvent("UserAdded", b'{"user_id": "\xff", "name": "x"}')])
    planted = await plant_old_metadata(Path(seeded["url"].removeprefix("sqlite:///")), "users-old")
    app = create_app(seeded["url"], APPS)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
    ):
        yield client, {"ids": ids, "planted": planted}


async def test_bytes_that_are_not_json_show_as_base64_and_an_escaped_preview(
    hostile: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, seeded = hostile
    for i, (name, raw) in enumerate(SHOWN_AS_BYTES.items()):
        stream = await client.get("/stream", params={"name": f"bytes-{i}"})
        event = await client.get(f"/events/{seeded['ids'][name]}")
        for response in (stream, event):
            assert response.status_code == 200, name
            assert base64_of(response.text) == [base64.b64encode(raw).decode()], name
            assert base64.b64decode(base64_of(response.text)[0]) == raw  # every byte, exactly
            assert re.search(
                rf"data is not (JSON|shown as JSON \([^)]*\)): {len(raw)} bytes, shown as base64", response.text
            )
    for page in (await client.get("/streams")).text, (await client.get("/log")).text:
        assert "bytes-0" in page
    escapes = (await client.get(f"/events/{seeded['ids']['terminal escapes']}")).text
    assert preview_of(escapes) == ["\\x1b[31mred\\x1b[0m\\r\\nnext"]
    deep = (await client.get(f"/events/{seeded['ids']['deep list']}")).text
    assert "data is not shown as JSON (nested deeper than 100 levels): 20001 bytes" in deep
    assert preview_of(deep) == ["[" * 4096 + "… (15905 more bytes)"]
    null = (await client.get(f"/events/{seeded['ids']['the JSON null']}")).text
    assert "data is not shown as JSON (the JSON null, which stands for empty bytes): 4 bytes" in null
    form = (await client.get(f"/events/{seeded['ids']['the $bytes form itself']}")).text
    assert "(an object with the single key &#39;$bytes&#39;, which stands for bytes): 18 bytes" in form
    utf8 = (await client.get(f"/events/{seeded['ids']['invalid UTF-8 in a string']}")).text
    assert preview_of(utf8) == ['{"a": "\\xff\\xfe"}']


async def test_json_is_shown_with_its_tokens_verbatim_and_invisible_characters_escaped(
    hostile: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, _ = hostile
    page = (await client.get("/stream", params={"name": "json-1"})).text
    shown = [html.unescape(p) for p in re.findall(r'<pre class="json" data-kind="json">(.*?)</pre>', page, re.S)]
    assert [json.loads(p) for p in shown] == [json.loads(raw) for raw in SHOWN_AS_JSON]
    assert '{\n  "a": 1.10000000000000000001,\n  "a": 2\n}' in shown
    assert '{\n  "a": 1267650600228229401496703205376\n}' in shown
    assert base64_of(page) == []
    invisible = (await client.get("/stream", params={"name": "json-2"})).text
    [pretty] = re.findall(r'<pre class="json" data-kind="json">(.*?)</pre>', invisible, re.S)
    assert html.unescape(pretty) == '{\n  "a": "\\u202e\\u0085\\u200b\\udb40\\udc01 ok"\n}'  # same value
    assert json.loads(html.unescape(pretty)) == {"a": "\u202e\u0085\u200b\U000e0001 ok"}


async def test_metadata_a_store_returns_unparseable_never_breaks_a_page(
    hostile: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, seeded = hostile
    for path in ("/streams", "/log", "/stream?name=users-old", "/deciders"):
        response = await client.get(path)
        assert response.status_code == 200, path
    for event_id, metadata in seeded["planted"].items():
        page = await client.get(f"/events/{event_id}")
        assert page.status_code == 200
        assert base64_of(page.text) == [base64.b64encode(metadata).decode()]
        assert "This event has no <code>$correlation_id</code>" in page.text


async def test_state_of_a_stream_its_decider_cannot_decode_names_the_event(
    hostile: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, _ = hostile
    response = await client.get("/state", params={"category": "users", "id": "main"})
    assert response.status_code == 200
    assert (
        '<p class="error" id="state-error">The state at version 3 cannot be built: DecodeError: users-main: '
        "cannot decode event &#39;UserAdded&#39; at version 3: "
    ) in response.text
    assert 'href="/state?category=users&amp;id=main&amp;version=2">v2</a>' in response.text  # one step back
    before = await client.get("/state", params={"category": "users", "id": "main", "version": 2})
    assert before.status_code == 200 and '<pre class="json" id="state">' in before.text


def test_a_state_json_cannot_show_is_shown_by_repr_or_named() -> None:
    from epoch.web._views import state_json

    assert state_json({"n": 2**100}) == '{\n  "n": 1267650600228229401496703205376\n}'
    assert state_json({"n": 10**5000}) == "<a dict that cannot be shown>"  # too many digits even for repr
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert state_json(deep) == "<a list that cannot be shown>"
    assert state_json({1, 2}) == "[\n  1,\n  2\n]"
