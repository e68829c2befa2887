"""``epoch serve`` in a real headless browser (Debian chromium through playwright).

The explorer runs as the real console command (uvicorn, in a subprocess) on a SQLite and on a PostgreSQL
store filled by the Users example. The walk: streams → search → stream (one line per event: at least 15 on
a 1280x900 screen) → event JSON → correlation chain → decider state at a version, at a time, and what
changed from the version before; the events-per-minute chart; then the live log, newest first, shows an
event appended after the page loaded at its top.

Chromium is ``$EPOCH_CHROMIUM`` or ``/usr/bin/chromium`` (Debian's ``chromium``, which scripts/test
installs when it is missing and it runs as root). Without it the test fails under scripts/test and CI
(``EPOCH_REQUIRE_BROWSER=1`` or ``$CI`` set) and is skipped only in a bare ``pytest`` run. With
``EPOCH_SCREENSHOT=1`` the SQLite run writes the screenshots in ``docs/img/`` (see docs/web.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from playwright.sync_api import Dialog, Page, ViewportSize

from epoch import NewEvent, open_store
from epoch.examples.users import AddUser, UserService
from tests.serving import free_port, serving
from tests.test_web import APPS, WEIRD, seed

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("EPOCH_CHROMIUM") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "docs" / "img"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
CLICKS = 35  # events in one stream, more than one screen holds
T = TypeVar("T")

pytestmark = pytest.mark.slow


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in its own thread (playwright's sync API owns this one)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("EPOCH_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
            pytest.fail(f"chromium is required here but unavailable: {message}")
        pytest.skip(message)
    return CHROMIUM


async def seed_all(url: str) -> None:
    await seed(url)
    async with open_store(url) as store:
        for n in range(CLICKS):
            await store.append("clicks-1", [NewEvent("Clicked", json.dumps({"n": n, "button": "ok"}).encode())])


@pytest.fixture
def server(sql_store_url: str) -> Iterator[tuple[str, str]]:
    """``epoch serve`` on a free port over a seeded store of each kind: (base URL, store URL)."""
    store_url = sql_store_url
    run_async(lambda: seed_all(store_url))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    command = [sys.executable, "-m", "epoch.cli", "serve", "--store", store_url, "--port", str(port)]
    for spec in APPS:
        command += ["--app", spec]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with serving(process, port, _answers) as base:
        yield base, store_url


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/streams", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def rows_on_screen(page: Page, selector: str) -> int:
    """How many of the rows matching ``selector`` lie wholly inside the viewport."""
    count: int = page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].filter((row) => {
            const box = row.getBoundingClientRect();
            return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
        }).length""",
        selector,
    )
    return count


def test_explore_the_users_example_in_a_browser(chromium: str, server: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store_url = server
    shots = bool(os.environ.get("EPOCH_SCREENSHOT")) and store_url.startswith("sqlite")

    def shot(page: Page, name: str, full_page: bool = False) -> None:
        if shots:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)

    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)

            def dismiss(dialog: Dialog) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", dismiss)
            page.set_default_timeout(10_000)

            # Streams, then a prefix search.
            page.goto(f"{base}/")
            expect(page.locator("h1")).to_have_text("Streams")
            expect(page.locator("#summary")).to_contain_text("9 streams")
            shot(page, "streams.png")
            page.fill("input[name=q]", "users-")
            page.select_option("select[name=match]", "prefix")
            page.click("form.search button")
            expect(page.locator("#summary")).to_contain_text("2 streams matching")
            expect(page.locator("a.stream")).to_have_count(2)

            # A long stream: one line per event, so a 1280x900 screen shows at least 15 of them.
            page.goto(f"{base}/stream?name=clicks-1")
            expect(page.locator("tr.event")).to_have_count(CLICKS)
            on_screen = rows_on_screen(page, "tr.event")
            assert on_screen >= 15, on_screen
            expect(page.locator("tr#v0 summary")).to_have_text('{ "n": 0, "button": "ok" }')
            expect(page.locator("tr#v0 pre.json")).not_to_be_visible()
            page.click("tr#v0 summary")  # the event's JSON opens in place
            expect(page.locator("tr#v0 pre.json").first).to_be_visible()
            page.click("tr#v0 summary")
            shot(page, "stream.png")

            # One stream of the example: its events' JSON.
            page.goto(f"{base}/stream?name=users-main")
            expect(page.locator("h1")).to_contain_text("users-main")
            expect(page.locator("tr.event")).to_have_count(3)
            expect(page.locator("tr.event pre.json").first).to_contain_text('"name": "ada"')

            # One event, then its correlation chain: UserAdded caused NameReserved (the registry saga).
            page.locator("tr.event a.event-link", has_text="UserAdded").first.click()
            expect(page.locator("h1")).to_have_text("Event UserAdded")
            expect(page.locator("pre.json").first).to_contain_text('"name": "ada"')
            expect(page.locator("#chain a.chain-link")).to_have_text(["UserAdded", "NameReserved"])
            shot(page, "explorer.png", full_page=True)
            page.click("#chain a.chain-link:text-is('NameReserved')")
            expect(page.locator("h1")).to_have_text("Event NameReserved")
            expect(page.locator("#chain li.current > a")).to_have_text("NameReserved")
            page.click("a.cause")  # follow the causation link back
            expect(page.locator("h1")).to_have_text("Event UserAdded")

            # The decider's state after that event (version 0), then at the head, with what changed.
            page.click("a.state-link")
            expect(page.locator("#state-version")).to_have_text("0")
            expect(page.locator("#state")).to_contain_text('"name": "ada"')
            expect(page.locator("#state")).not_to_contain_text("grace")
            expect(page.locator("#diff li.added")).to_have_count(1)
            page.click("nav.versions a:text-is('v2')")
            expect(page.locator("#state-version")).to_have_text("2")
            expect(page.locator("#state")).to_contain_text('"name": "ada lovelace"')
            expect(page.locator("#state")).to_contain_text('"name": "grace"')
            expect(page.locator("#diff li")).to_have_count(1)
            expect(page.locator("#diff li.changed")).to_contain_text('.name "ada" → "ada lovelace"')
            shot(page, "state.png")
            page.fill("input[name=version]", "1")
            page.click("form.search button >> nth=0")
            expect(page.locator("#state-version")).to_have_text("1")

            # The state at a time: the instant version 1 was recorded, typed into the form.
            async def recorded_at(version: int) -> str:
                async with open_store(store_url) as store:
                    async for event in store.read_stream("users-main", from_version=version, limit=1):
                        return event.recorded_at.isoformat()
                raise AssertionError("users-main is too short")

            when = run_async(lambda: recorded_at(1))
            page.fill("#at-form input[name=at]", when)
            page.click("#at-form button")
            expect(page.locator("#state-version")).to_have_text("1")
            expect(page.locator("#state-at")).to_contain_text("its last event was version 1")
            page.fill("#at-form input[name=at]", "2026-12-01T10:00:00")  # no time zone: said so, not a 500
            page.click("#at-form button")
            expect(page.locator("#error")).to_have_text(
                "at must name its time zone (e.g. 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00), "
                "not '2026-12-01T10:00:00'"
            )

            # Events per minute: every event seeded is in the last hour's bars.
            page.goto(f"{base}/activity")
            expect(page.locator("svg.chart rect.bar")).to_have_count(60)
            expect(page.locator("#activity-summary")).to_contain_text(f"{10 + CLICKS} events in the last 60 minutes")
            counts = [
                int(n)
                for n in page.locator("svg.chart rect.bar").evaluate_all(
                    "(bars) => bars.map((bar) => bar.dataset.count)"
                )
            ]
            assert sum(counts) == 10 + CLICKS, counts  # (the last bar may be empty: a minute may have begun)
            shot(page, "activity.png")
            page.fill("input[name=category]", "clicks")
            page.click("form.search button")
            expect(page.locator("#activity-summary")).to_contain_text(f"{CLICKS} events in the last 60 minutes")

            # A hostile stream name is shown as text and round-trips through its link.
            page.goto(f"{base}/streams?q=script")
            page.click("a.stream")
            expect(page.locator("h1 code.stream-name")).to_have_text(WEIRD)
            expect(page.locator("pre.base64")).to_have_count(1)

            # The live log, newest first: an event appended after the page loaded shows up at the top.
            page.goto(f"{base}/log")
            expect(page.locator("#live-status")).to_have_text("live")
            before = page.locator("tr.log-row").count()
            first = int(page.locator("tr.log-row").first.get_attribute("data-position") or "0")
            shot(page, "log.png")

            async def append() -> int:
                async with open_store(store_url) as store:
                    result = await UserService(store, "main").add_user(AddUser("margaret <live>"))
                    return result.position

            position = run_async(append)
            assert position > first
            row = page.locator(f'tr.log-row[data-position="{position}"]')
            expect(row).to_be_visible(timeout=5_000)
            expect(row).to_contain_text("UserAdded")
            expect(page.locator("tr.log-row")).to_have_count(before + 1)
            expect(page.locator("tr.log-row").first).to_have_attribute("data-position", str(position))
            assert page.url == f"{base}/log"  # no reload

            # Paging to older events, ten at a time.
            page.goto(f"{base}/log?size=10")
            newest = [
                int(p or 0) for p in page.locator("tr.log-row").evaluate_all("(r) => r.map((x) => x.dataset.position)")
            ]
            assert newest[0] == position and newest == sorted(newest, reverse=True) and len(newest) == 10
            page.click("a[rel=next]")  # older →
            older = [
                int(p or 0) for p in page.locator("tr.log-row").evaluate_all("(r) => r.map((x) => x.dataset.position)")
            ]
            assert len(older) == 10 and older == sorted(older, reverse=True) and older[0] < newest[-1], older
        finally:
            browser.close()
    assert dialogs == []  # nothing in the store ever ran as script
