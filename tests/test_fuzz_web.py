"""Fuzzing the web explorer: hostile stored bytes, names, search strings and numbers (issue 8 item 7).

Each test keeps one real SQLite store (holding the Users example, so decider states can be asked for)
and one explorer app for all its examples; requests go through httpx's ASGI transport, which re-raises
any exception the app lets out, so a crash fails the example with its traceback. Every answer is 200,
400 or 404 (never 500), and no markup from a name or from data reaches a page unescaped. The live log
(server-sent events) is called straight on the ASGI app. The number of examples comes from the
hypothesis profile (tests/hostile.py).
"""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
import json
import re
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import markupsafe
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette

from epoch import EventStore, InvalidEvent, NewEvent, open_store
from epoch._payload import MAX_DEPTH, payload_of
from epoch.examples.users import AddUser, UserService
from epoch.web import create_app
from epoch.web._context import PREVIEW_LIMIT, _oneline
from tests.hostile import any_text, bad_numbers, hostile_json, hostile_names, huge_ints, is_valid_name
from tests.payloads import SHOWN_AS_BYTES

APPS = ["epoch.examples.users.service:UserService", "epoch.examples.users.projections:runner"]
MARKUP = st.builds(lambda text: json.dumps({"html": f"</pre><script>{text}</script>"}).encode(), any_text)
stored_bytes = st.one_of(hostile_json, MARKUP, st.just(b"<script>alert(1)</script>"))
COUNTER = itertools.count()  # a fresh stream per example: the store is shared by all of a test's examples
# What a query parameter may be: any text, any hostile number written as text.
param_text = st.one_of(
    any_text, bad_numbers.map(str), huge_ints.map(str), st.sampled_from(["", "1", "0", "²", "\u0661"])
)


number_text = param_text


def encode(text: str) -> str:
    """Percent-encode any str, lone surrogates included (as a browser would send their UTF-8 bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def received(text: str) -> str:
    """What the explorer gets for ``encode(text)``: bytes that are not UTF-8 decode to U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class Explorer:
    def __init__(self, app: Starlette, client: httpx.AsyncClient, store: EventStore) -> None:
        self.app, self.client, self.store = app, client, store

    async def get(self, path: str, **params: str) -> httpx.Response:
        query = "&".join(f"{encode(k)}={encode(v)}" for k, v in params.items())
        response = await self.client.get(f"{path}?{query}" if query else path)
        assert response.status_code in (200, 400, 404), (path, params, response.status_code, response.text[-600:])
        assert_escaped(response.text)
        return response


# Every tag the templates write: markup from a name or from data would add others (or a second script).
TAGS = {
    *("a", "article", "body", "button", "code", "dd", "details", "dl", "dt", "form", "h1", "h2", "h3", "head"),
    *("header", "html", "input", "label", "li", "link", "main", "meta", "nav", "option", "p", "pre", "script"),
    *("section", "select", "span", "strong", "summary", "table", "tbody", "td", "th", "thead", "title", "tr", "ul"),
    *("del", "ins", "figure", "svg", "rect", "line", "text"),  # a state's changes; the activity chart
}


def assert_escaped(page: str) -> None:
    assert set(re.findall(r"</?([a-zA-Z][\w-]*)", page)) <= TAGS
    # The explorer's only script is the live log's, loaded from /static.
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts in ([], ['<script src="/static/live.js" defer>']), scripts


@pytest.fixture
async def explorer(sqlite_url: str) -> AsyncIterator[Explorer]:
    async with open_store(sqlite_url) as store:
        await UserService(store, "main").add_user(AddUser("ada"))
        app = create_app(sqlite_url, APPS)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
        ):
            yield Explorer(app, client, store)


async def live(
    app: Starlette, query: str, last_event_id: str | None = None, until: bytes | None = None
) -> tuple[int, bytes]:
    """``GET /log/live`` on the ASGI app: its status and body until the first chunk (or until the event
    holding ``until`` has arrived whole), then the client goes away."""
    status, body, enough = 0, bytearray(), asyncio.Event()

    async def receive() -> dict[str, Any]:
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if until is None or (until in body and body.endswith(b"\n\n")):
                enough.set()

    headers = [(b"host", b"explorer")]
    if last_event_id is not None:
        headers.append((b"last-event-id", header_bytes(last_event_id)))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/log/live",
        "raw_path": b"/log/live",
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("explorer", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 10)
    return status, bytes(body)


def header_bytes(text: str) -> bytes:
    """A header value as sent: HTTP headers are Latin-1; other text goes as UTF-8 bytes."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def shown_bodies(page: str, kind: str) -> list[str]:
    return [html.unescape(b) for b in re.findall(rf'<pre class="{kind}" data-kind="{kind}">(.*?)</pre>', page, re.S)]


# -- stored bytes -----------------------------------------------------------------------------


@given(raw=st.one_of(stored_bytes, st.sampled_from(list(SHOWN_AS_BYTES.values()))))
@example(raw=b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
@example(raw=b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
async def test_every_page_shows_any_stored_bytes(explorer: Explorer, raw: bytes) -> None:
    stream = f"fuzz-{next(COUNTER)}"
    event = NewEvent("Fuzzed", raw)
    position = (await explorer.store.append(stream, [event])).position
    payload = payload_of(raw)
    for page in (
        (await explorer.get("/stream", name=stream)).text,
        (await explorer.get(f"/events/{event.id}")).text,
    ):
        if payload.kind == "json":
            [pretty] = shown_bodies(page, "json")
            assert json.loads(pretty) == json.loads(raw)
        elif payload.kind == "bytes":
            assert shown_bodies(page, "base64") == [base64.b64encode(raw).decode()]
            assert shown_bodies(page, "preview") == [payload.preview()]
        else:
            assert '<p class="note">no data</p>' in page
    log = (await explorer.get("/log", after=str(position - 1))).text
    assert f'data-position="{position}"' in log
    assert f'">{stream}</a>' in (await explorer.get("/streams", q=stream)).text
    status, first = await live(explorer.app, f"after={position - 1}")
    assert status == 200 and first.startswith(b"retry: 2000\n")


async def test_the_live_log_sends_rows_for_any_stored_bytes(explorer: Explorer) -> None:
    head = await explorer.store.head_position()
    for raw in SHOWN_AS_BYTES.values():
        await explorer.store.append("fuzz-live", [NewEvent("<Fuzzed>", raw)])
    last = f"id: {head + len(SHOWN_AS_BYTES)}\n".encode()
    status, body = await live(explorer.app, f"after={head}", until=last)
    assert status == 200
    assert body.count(b"event: append\n") == len(SHOWN_AS_BYTES)
    assert b"&lt;Fuzzed&gt;" in body and b"<Fuzzed>" not in body


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
async def test_the_live_log_frames_names_with_a_line_separator_whole(explorer: Explorer, separator: str) -> None:
    # str.splitlines() also splits at these, which a name may hold (the others it splits at are control
    # characters, no name holds them); server-sent events end a line only at CR or LF, and EventSource
    # joins the data lines with LF: the row must arrive as sent.
    head = await explorer.store.head_position()
    stream, event_type = f"odd-a{separator}b{next(COUNTER)}", f"Type{separator}X"
    await explorer.store.append(stream, [NewEvent(event_type, b"{}")])
    status, body = await live(explorer.app, f"after={head}", until=b"event: append\n")
    assert status == 200
    frame = body.decode().split("event: append\n", 1)[1]
    data = [line for line in frame.split("\n\n", 1)[0].split("\n")]
    assert len(data) == 1 and data[0].startswith('data: <tr class="log-row"')
    row = data[0].removeprefix("data: ")
    assert f'">{markupsafe.escape(stream)}</a>' in row and f">{markupsafe.escape(event_type)}</a>" in row


metadata_values = st.one_of(
    any_text,
    st.uuids().map(str),
    st.integers(),
    huge_ints,
    st.lists(any_text, max_size=3),
    st.dictionaries(any_text, any_text, max_size=3),
    st.none(),
)


@given(correlation=metadata_values, causation=metadata_values, command=metadata_values)
async def test_event_page_for_any_correlation_metadata(
    explorer: Explorer, correlation: object, causation: object, command: object
) -> None:
    metadata = json.dumps({"$correlation_id": correlation, "$causation_id": causation, "$command_id": command})
    event = NewEvent("Fuzzed", b"{}", metadata.encode("utf-8", "surrogatepass"))
    try:
        await explorer.store.append(f"fuzz-{next(COUNTER)}", [event])
    except InvalidEvent:
        return  # the store refused it (e.g. a lone surrogate): nothing was stored, nothing to show
    page = (await explorer.get(f"/events/{event.id}")).text
    assert "Correlation chain" in page
    if correlation is not None and str(correlation) != "":  # an empty id is shown as none
        assert f"<dt>Correlation</dt><dd><code>{markupsafe.escape(str(correlation))}</code></dd>" in page


# Every character str.splitlines() ends a line at besides CR and LF. JSON a user writes holds one raw only
# inside a string (the controls among them must be escaped there, as \u000b, but a store hands back what
# was stored), where it is no line break: a one-line preview ends lines at CR and LF only.
LINE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def cut(line: str) -> str:
    return line if len(line) <= PREVIEW_LIMIT else line[:PREVIEW_LIMIT] + "\u2026"


@given(value=any_text)
@example(value="".join(LINE_BREAKS))
@example(value="a\u2028  b\u2029  c\x85")
def test_a_one_line_preview_of_json_a_user_wrote(value: str) -> None:
    written = json.dumps({"note": value, "n": [1]}, ensure_ascii=False, indent=2)  # lines end at LF
    one_line = cut('{ "note": ' + json.dumps(value, ensure_ascii=False) + ', "n": [ 1 ] }')
    assert _oneline(written) == one_line
    assert _oneline(written.replace("\n", "\r\n")) == one_line
    assert _oneline(written.replace("\n", "\r")) == one_line


@pytest.mark.parametrize("char", LINE_BREAKS)
def test_a_one_line_preview_keeps_a_raw_line_break_inside_a_string(char: str) -> None:
    assert _oneline(f'{{\n  "a": "x{char}  y",\n  "b": 1\r\n}}') == f'{{ "a": "x{char}  y", "b": 1 }}'


def preview_line(page: str) -> list[str]:
    return [html.unescape(p) for p in re.findall(r'<summary class="preview-line"><code>(.*?)</code>', page, re.S)]


@given(value=any_text.filter(lambda text: not any("\ud800" <= c <= "\udfff" for c in text)))
@example(value="".join(LINE_BREAKS))
@example(value="a\u2028  b\u2029  c\x85")
async def test_the_stream_page_previews_any_json_string_on_one_line(explorer: Explorer, value: str) -> None:
    stream, raw = f"fuzz-{next(COUNTER)}", json.dumps({"note": value}, ensure_ascii=False).encode()
    await explorer.store.append(stream, [NewEvent("Fuzzed", raw)])
    [preview] = preview_line((await explorer.get("/stream", name=stream)).text)
    # The pretty JSON escapes what does not print (each line break above among it): same value, one line.
    [_, member, _] = payload_of(raw).pretty().split("\n")
    assert preview == cut("{ " + member.removeprefix("  ") + " }")
    if len(preview) <= PREVIEW_LIMIT:
        assert json.loads(preview) == {"note": value}


# -- hostile names, search strings and numbers ------------------------------------------------


@given(name=hostile_names)
@example(name="users-main")
@example(name="<script>alert(1)</script>")
async def test_stream_page_for_any_name(explorer: Explorer, name: str) -> None:
    response = await explorer.get("/stream", name=name)
    name = received(name)
    if name == "":
        assert response.status_code == 400 and "the query parameter &#39;name&#39; is required" in response.text
    elif not is_valid_name(name):
        assert response.status_code == 400 and "InvalidStreamName: invalid stream name" in response.text
    elif name != "users-main":
        assert response.status_code == 404 and "no stream named" in response.text
    else:
        assert response.status_code == 200


@given(q=param_text, match=st.one_of(st.sampled_from(["contains", "prefix"]), param_text), page=param_text)
@example(q="<script>", match="prefix", page="1")
async def test_streams_page_for_any_search(explorer: Explorer, q: str, match: str, page: str) -> None:
    response = await explorer.get("/streams", q=q, match=match, page=page)
    if response.status_code == 200:
        assert f'name="q" value="{markupsafe.escape(received(q))}"' in response.text


def in_range(text: str, low: int, high: int = 2**64) -> bool:
    """Whether the explorer takes ``text`` for a number parameter: empty (the default) or an int in range."""
    if text == "":
        return True
    try:
        value = int(
            received(text)
        )  # as the explorer parses it: Python's int(), so " 1", "+1", "1_0" and Arabic-Indic digits too
    except ValueError:
        return False
    return low <= value <= high


@given(value=number_text, size=param_text)
async def test_paged_pages_for_any_number(explorer: Explorer, value: str, size: str) -> None:
    good_size = in_range(size, 1, 500)
    stream = await explorer.get("/stream", name="users-main", **{"from": value}, size=size)
    assert stream.status_code == (200 if in_range(value, 0) and good_size else 400)
    log = await explorer.get("/log", after=value, size=size)
    assert log.status_code == (200 if in_range(value, 0) and good_size else 400)
    streams = await explorer.get("/streams", size=size, page=value)
    if in_range(value, 1) and good_size:  # one stream (users-main), so one page: pages past it are 404
        assert streams.status_code == (200 if value == "" or int(received(value)) == 1 else 404)
    else:
        assert streams.status_code == 400


@given(entity=hostile_names, version=param_text, category=st.sampled_from(["users", "<x>", ""]))
@example(entity="main", version="0", category="users")
async def test_state_page_for_any_entity_and_version(
    explorer: Explorer, entity: str, version: str, category: str
) -> None:
    response = await explorer.get("/state", category=category, id=entity, version=version)
    if response.status_code == 200:  # only the one entity there is, at a version it has
        assert (category, received(entity)) == ("users", "main")
        assert '<pre class="json" id="state">' in response.text


instants = st.one_of(
    param_text,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: a 400, never a guess of the zone
)


def instant_ok(text: str) -> bool:
    """What the state page accepts as at=: an ISO-8601 instant with a time zone, within range in UTC."""
    try:
        value = datetime.fromisoformat(received(text))
        return value.utcoffset() is not None and value.astimezone(UTC) is not None
    except (ValueError, OverflowError):
        return False


@given(at=instants, version=st.sampled_from(["", "0"]))
@example(at="0001-01-01T00:00:00+01:00", version="")  # year 0 in UTC
@example(at="9999-12-31T23:59:59-01:00", version="")  # year 10000 in UTC
@example(at="2026-12-01T10:00:00", version="")
@example(at="2999-01-01T00:00:00Z", version="0")
async def test_state_page_for_any_time(explorer: Explorer, at: str, version: str) -> None:
    response = await explorer.get("/state", category="users", id="main", at=at, version=version)
    if received(at) == "":
        assert response.status_code == 200 and 'id="state-version">0<' in response.text
    elif not instant_ok(at):
        assert response.status_code == 400
        assert "at must " in response.text or "at is out of range" in response.text
    elif version:
        assert response.status_code == 400 and "give version or at, not both" in response.text
    elif datetime.fromisoformat(received(at)) < (await first_recorded_at(explorer.store, "users-main")):
        assert response.status_code == 404 and "users-main has no event recorded at or before " in response.text
    else:
        assert response.status_code == 200 and 'id="state-version">0<' in response.text


async def first_recorded_at(store: EventStore, stream: str) -> datetime:
    async for event in store.read_stream(stream, limit=1):
        return event.recorded_at
    raise AssertionError(f"{stream} is empty")


@given(category=st.one_of(hostile_names, st.sampled_from(["", "users", "nobody"])), minutes=param_text)
@example(category="users", minutes="60")
@example(category="a-b", minutes="")
async def test_activity_page_for_any_category_and_minutes(explorer: Explorer, category: str, minutes: str) -> None:
    response = await explorer.get("/activity", category=category, minutes=minutes)
    if not in_range(minutes, 1, 1440):
        assert response.status_code == 400 and "minutes must be" in response.text
    elif received(category) in ("", "users"):
        assert response.status_code == 200
        if int(received(minutes) or "60") >= 2:  # ada was added just now: in the window (a minute is too short)
            assert '<p class="summary" id="activity-summary">1 event in the last ' in response.text
    elif response.status_code == 200:
        assert "0 events in the last" in response.text
    else:
        assert response.status_code == 400 and "InvalidStreamName: " in response.text


@given(text=st.one_of(param_text, st.uuids().map(str)))
@example(text="0/")
async def test_event_page_for_any_id(explorer: Explorer, text: str) -> None:
    response = await explorer.client.get(f"/events/{encode(text)}")
    if response.status_code == 307:  # "/events/0/" (a decoded %2F last): starlette drops the slash
        assert received(text).endswith("/") and response.headers["location"].startswith("http://explorer/events/")
        return
    assert response.status_code in (400, 404), response.status_code
    assert_escaped(response.text)


@given(after=number_text)
async def test_live_log_for_any_after(explorer: Explorer, after: str) -> None:
    status, body = await live(explorer.app, f"after={encode(after)}")
    assert status in (200, 400), status
    if status == 400:
        assert b"after must be" in body


@given(last_event_id=number_text)
@example(last_event_id="²")  # a digit to str.isdigit, not to int()
@example(last_event_id="9" * 4301)  # ASCII digits, more than int() reads
async def test_live_log_for_any_last_event_id(explorer: Explorer, last_event_id: str) -> None:
    status, body = await live(explorer.app, "", last_event_id)
    assert status == 200 and body.startswith(b"retry: 2000\n")


@pytest.mark.parametrize(
    "last_event_id",
    ["²", "\u0661", "1.5", "-1", "", "9" * 21, "1" * 4301, "9" * 10_000],
    ids=lambda text: text if len(text) < 20 else f"{len(text)} digits",
)
async def test_a_last_event_id_not_sent_from_here_is_ignored(explorer: Explorer, last_event_id: str) -> None:
    # Not ASCII digits, or more than the 20 digits of a 64-bit position, so not a position the log sent:
    # the query's ``after`` decides (here, badly).
    status, body = await live(explorer.app, "after=x", last_event_id)
    assert status == 400 and b"after must be a whole number, not &#39;x&#39;" in body


async def test_projections_and_deciders_pages(explorer: Explorer) -> None:
    for raw in SHOWN_AS_BYTES.values():
        await explorer.store.append("users-fuzz", [NewEvent("UserAdded", raw)])
    for path in ("/projections", "/deciders"):
        assert (await explorer.get(path)).status_code == 200
    state = await explorer.get("/state", category="users", id="fuzz")
    assert state.status_code == 200 and "cannot be built: DecodeError: users-fuzz: " in state.text


async def test_a_last_event_id_of_20_digits_resumes_there(explorer: Explorer) -> None:
    status, body = await live(explorer.app, "after=x", "9" * 20)  # a position: ``after`` is not read
    assert (status, body) == (200, b"retry: 2000\n: live\n\n")


@pytest.mark.parametrize("value", [2**63, 2**64])
@pytest.mark.parametrize(("path", "param"), [("/stream", "from"), ("/log", "after"), ("/log", "before")])
async def test_versions_and_positions_of_64_bits(explorer: Explorer, path: str, param: str, value: int) -> None:
    response = await explorer.get(path, name="users-main", **{param: str(value)})
    assert response.status_code == 200


@pytest.mark.parametrize("value", [2**64 + 1, 2**100, 10**4299], ids=["2**64+1", "2**100", "10**4299"])
@pytest.mark.parametrize(
    ("path", "param"),
    [("/stream", "from"), ("/log", "after"), ("/log", "before"), ("/streams", "page"), ("/state", "version")],
)
async def test_numbers_beyond_64_bits_are_a_clear_400(explorer: Explorer, path: str, param: str, value: int) -> None:
    response = await explorer.get(path, name="users-main", category="users", id="main", **{param: str(value)})
    assert response.status_code == 400
    message = f"{param} must be {'between 1' if param == 'page' else 'between 0'} and 18446744073709551616, not {value}"
    assert f'<p class="error" id="error">{message}</p>' in response.text


@pytest.mark.parametrize("digits", [4300, 4301])
async def test_a_log_page_after_a_number_of_4300_digits_is_400(explorer: Explorer, digits: int) -> None:
    response = await explorer.get("/log", after="9" * digits)
    assert response.status_code == 400
    assert '<p class="error" id="error">after must be ' in response.text
