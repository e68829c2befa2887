"""The explorer with personal data: stored pages show a personal field as encrypted, never its ciphertext
or plaintext; the decider's state shows it decrypted; after a forget (by another store object, as by
another process) both show it redacted."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from epoch import KeyStore, open_store
from epoch.personal import ERASED, SEALED
from epoch.testing._personal_domain import Register, Rename, profile_handler
from epoch.web import create_app

APP = "epoch.testing._personal_domain:profile_handler"


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with open_store(sqlite_url) as store:
        handler = profile_handler(store)
        await handler.execute("u1", Register("ada@example.com", "Ada Lovelace"), services="u1")
        await handler.execute("u1", Rename("Ada King"))
        await handler.execute("u2", Register("grace@example.com", "Grace Hopper"), services="u2")
    app = create_app(sqlite_url, [APP])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://explorer") as client,
    ):
        yield client


def state_of(page: str) -> str:
    found = re.search(r'<pre class="json" id="state">(.*?)</pre>', page, re.S)
    assert found is not None, page
    return html.unescape(found[1])


def assert_nothing_personal(page: str) -> None:
    for secret in ("ada@example.com", "Ada Lovelace", "Ada King", "epoch:aes256gcm"):
        assert secret not in page


async def test_personal_fields_show_as_encrypted_then_erased(client: httpx.AsyncClient, sqlite_url: str) -> None:
    stream = (await client.get("/stream", params={"name": "profile-u1"})).text
    assert_nothing_personal(stream)
    # email and name, then the new name; each event shows as a one-line preview and as pretty JSON
    assert stream.count(html.escape(SEALED, quote=True)) == 6
    log = (await client.get("/log")).text
    assert_nothing_personal(log.replace("grace@example.com", ""))
    state = state_of((await client.get("/state", params={"category": "profile", "id": "u1"})).text)
    assert '"email": "ada@example.com"' in state and '"name": "Ada King"' in state

    async with open_store(sqlite_url) as elsewhere:
        assert await KeyStore.for_store(elsewhere).forget("u1") == 1
    await asyncio.sleep(0.6)  # past the explorer's revalidation interval (half a second)

    stream = (await client.get("/stream", params={"name": "profile-u1"})).text
    assert_nothing_personal(stream)
    assert stream.count(html.escape(ERASED, quote=True)) == 6 and SEALED not in stream
    event_id = re.findall(r'href="/events/([0-9a-f-]{36})"', stream)[0]
    event = (await client.get(f"/events/{event_id}")).text
    assert_nothing_personal(event)
    assert html.escape(ERASED, quote=True) in event
    state = state_of((await client.get("/state", params={"category": "profile", "id": "u1"})).text)
    assert '"email": null' in state and '"name": null' in state and '"renames": 1' in state
    first = state_of((await client.get("/state", params={"category": "profile", "id": "u1", "version": 0})).text)
    assert '"name": "anonymous"' in first
    other = state_of((await client.get("/state", params={"category": "profile", "id": "u2"})).text)
    assert '"email": "grace@example.com"' in other
