"""The demo channel page in a real browser: each message shows its number, not the stream id."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.support.servers import ServerProcess


def test_the_channel_page_numbers_messages_without_the_epoch(
    page: Page, server: ServerProcess, api_key: str, channel: str
) -> None:
    page.goto(f"{server.url}/channels/{channel}/")
    expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
    response = httpx.post(
        f"{server.url}/api/channels/{channel}/messages",
        json={"event": "message", "data": "hello"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 201
    number = response.json()["id"]
    meta = page.locator("#events li .meta").first
    expect(meta).to_contain_text(f"#{number} message ·", timeout=10_000)
    assert "~" not in meta.inner_text()


def test_the_channel_page_shows_every_event_type(
    page: Page, server: ServerProcess, api_key: str, channel: str
) -> None:
    page.goto(f"{server.url}/channels/{channel}/")
    expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
    for event, data in [("line", "one"), ("score", {"text": "Reds 1 - 0 Blues"})]:
        response = httpx.post(
            f"{server.url}/api/channels/{channel}/messages",
            json={"event": event, "data": data},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert response.status_code == 201
    items = page.locator("#events li")
    expect(items.locator(".body")).to_have_text(["Reds 1 - 0 Blues", "one"], timeout=10_000)
    expect(items.first.locator(".meta")).to_contain_text("score ·")
    expect(items.nth(1).locator(".meta")).to_contain_text("line ·")
