"""``epoch serve`` in a real headless browser (Debian chromium through playwright).

The explorer runs as the real console command (uvicorn, in a subprocess) on a SQLite store filled by the
Users example. The walk: streams → search → stream → event JSON → correlation chain → decider state at a
version; then the live log shows an event appended after the page loaded.

Chromium is ``$EPOCH_CHROMIUM`` or ``/usr/bin/chromium`` (Debian's ``chromium``, which scripts/test
installs when it is missing and it runs as root). Without it the test fails under scripts/test and CI
(``EPOCH_REQUIRE_BROWSER=1`` or ``$CI`` set) and is skipped only in a bare ``pytest`` run. With
``EPOCH_SCREENSHOT=1`` it writes ``docs/img/explorer.png``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from epoch import open_store
from epoch.examples.users import AddUser, UserService
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
SCREENSHOT = ROOT / "docs" / "img" / "explorer.png"
T = TypeVar("T")

pytestmark = pytest.mark.slow


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in its own thread (playwright's sync API owns this one)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("EPOCH_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
            pytest.fail(f"chromium is required here but unavailable: {message}")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def server(sqlite_url: str) -> Iterator[tuple[str, str]]:
    """``epoch serve`` on a free port over a seeded SQLite store: (base URL, store URL)."""
    run_async(lambda: seed(sqlite_url))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    command = [sys.executable, "-m", "epoch.cli", "serve", "--store", sqlite_url, "--port", str(port)]
    for spec in APPS:
        command += ["--app", spec]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/streams", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                _, err = process.communicate(timeout=5)
                pytest.fail(f"epoch serve did not start: {err}")
            time.sleep(0.1)
        yield base, sqlite_url
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert "Traceback" not in err, err


def test_explore_the_users_example_in_a_browser(chromium: str, server: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store_url = server
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.set_default_timeout(10_000)

            # Streams, then a prefix search.
            page.goto(f"{base}/")
            expect(page.locator("h1")).to_have_text("Streams")
            expect(page.locator("#summary")).to_contain_text("8 streams")
            page.fill("input[name=q]", "users-")
            page.select_option("select[name=match]", "prefix")
            page.click("form.search button")
            expect(page.locator("#summary")).to_contain_text("2 streams matching")
            expect(page.locator("a.stream")).to_have_count(2)

            # One stream: its events' JSON.
            page.click("a.stream:text-is('users-main')")
            expect(page.locator("h1")).to_contain_text("users-main")
            expect(page.locator("article.event")).to_have_count(3)
            expect(page.locator("article.event pre.json").first).to_contain_text('"name": "ada"')

            # One event, then its correlation chain: UserAdded caused NameReserved (the registry saga).
            page.locator("article.event a.event-link", has_text="UserAdded").first.click()
            expect(page.locator("h1")).to_have_text("Event UserAdded")
            expect(page.locator("pre.json").first).to_contain_text('"name": "ada"')
            expect(page.locator("#chain a.chain-link")).to_have_text(["UserAdded", "NameReserved"])
            if os.environ.get("EPOCH_SCREENSHOT"):
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.click("#chain a.chain-link:text-is('NameReserved')")
            expect(page.locator("h1")).to_have_text("Event NameReserved")
            expect(page.locator("#chain li.current > a")).to_have_text("NameReserved")
            page.click("a.cause")  # follow the causation link back
            expect(page.locator("h1")).to_have_text("Event UserAdded")

            # The decider's state after that event (version 0), then at the head.
            page.click("a.state-link")
            expect(page.locator("#state-version")).to_have_text("0")
            expect(page.locator("#state")).to_contain_text('"name": "ada"')
            expect(page.locator("#state")).not_to_contain_text("grace")
            page.click("nav.versions a:text-is('v2')")
            expect(page.locator("#state-version")).to_have_text("2")
            expect(page.locator("#state")).to_contain_text('"name": "ada lovelace"')
            expect(page.locator("#state")).to_contain_text('"name": "grace"')
            page.fill("input[name=version]", "1")
            page.click("form.search button")
            expect(page.locator("#state-version")).to_have_text("1")

            # A hostile stream name is shown as text and round-trips through its link.
            page.goto(f"{base}/streams?q=script")
            page.click("a.stream")
            expect(page.locator("h1 code.stream-name")).to_have_text(WEIRD)
            expect(page.locator("pre.base64")).to_have_count(1)

            # The live log: an event appended after the page loaded shows up without a reload.
            page.goto(f"{base}/log")
            expect(page.locator("#live-status")).to_have_text("live")
            before = page.locator("tr.log-row").count()

            async def append() -> int:
                async with open_store(store_url) as store:
                    result = await UserService(store, "main").add_user(AddUser("margaret <live>"))
                    return result.position

            position = run_async(append)
            row = page.locator(f'tr.log-row[data-position="{position}"]')
            expect(row).to_be_visible(timeout=5_000)
            expect(row).to_contain_text("UserAdded")
            expect(page.locator("tr.log-row")).to_have_count(before + 1)
            assert page.url == f"{base}/log"  # no reload
        finally:
            browser.close()
    assert dialogs == []  # nothing in the store ever ran as script
