"""The explorer with personal data in a real headless browser: ``epoch serve`` (a subprocess) shows a
profile's personal fields as encrypted; ``epoch forget`` in another process; within a second the same
pages show them erased and the decider's state shows them redacted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from epoch import open_store
from epoch.personal import ERASED, SEALED
from epoch.testing._personal_domain import Register, Rename, profile_handler
from tests.serving import free_port, serving
from tests.test_web_browser import FLAGS, VIEWPORT, chromium, run_async
from tests.test_web_personal import APP

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
__all__ = ["chromium"]  # the fixture, shared with tests/test_web_browser.py


async def seed(url: str) -> None:
    async with open_store(url) as store:
        handler = profile_handler(store)
        await handler.execute("u1", Register("ada@example.com", "Ada Lovelace"), services="u1")
        await handler.execute("u1", Rename("Ada King"))


@pytest.fixture
def server(sqlite_url: str) -> Iterator[tuple[str, str]]:
    run_async(lambda: seed(sqlite_url))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    command = [sys.executable, "-m", "epoch.cli", "serve", "--store", sqlite_url, "--port", str(port), "--app", APP]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answers(base: str) -> bool:
        try:
            return httpx.get(f"{base}/streams", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    with serving(process, port, answers) as base:
        yield base, sqlite_url


def test_a_forgotten_subject_shows_as_erased_in_a_browser(chromium: str, server: tuple[str, str]) -> None:
    base, store_url = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(10_000)
            page.goto(f"{base}/stream?name=profile-u1")
            expect(page.locator("tr.event")).to_have_count(2)
            page.click("tr#v0 summary")
            opened = page.locator("tr#v0 pre.json").first
            expect(opened).to_contain_text(f'"email": "{SEALED}"')
            for secret in ("ada@example.com", "Ada Lovelace", "epoch:aes256gcm"):
                assert secret not in page.content()
            page.goto(f"{base}/state?category=profile&id=u1")
            expect(page.locator("#state")).to_contain_text('"email": "ada@example.com"')

            forgot = subprocess.run(
                [sys.executable, "-m", "epoch.cli", "forget", "u1", "--store", store_url],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert (forgot.returncode, forgot.stdout) == (0, "forgot subject 'u1': 1 key(s) erased\n"), forgot.stderr
            time.sleep(0.6)  # past the explorer's revalidation interval (half a second)

            page.goto(f"{base}/stream?name=profile-u1")
            page.click("tr#v0 summary")
            expect(page.locator("tr#v0 pre.json").first).to_contain_text(f'"email": "{ERASED}"')
            assert SEALED not in page.content()
            page.goto(f"{base}/state?category=profile&id=u1")
            expect(page.locator("#state")).to_contain_text('"email": null')
            expect(page.locator("#state")).to_contain_text('"name": null')
        finally:
            browser.close()
