"""The embeddable widget and iframe on another origin, in a real browser."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import HostSite
from tests.support.servers import ServerProcess, Site

_names = itertools.count()


def new_channel(site: Site, *origins: str) -> str:
    slug = f"widget-{next(_names)}"
    args = [arg for origin in origins for arg in ("--allow-origin", origin)]
    site.manage("create_channel", slug, "--title", "Live scores", *args)
    return slug


def publish(server: ServerProcess, key: str, slug: str, text: str) -> None:
    response = httpx.post(
        f"{server.url}/api/channels/{slug}/messages",
        json={"event": "score", "data": {"text": text}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text


def widget_tag(server: ServerProcess, slug: str, **options: str) -> str:
    attributes = " ".join(f'data-{name.replace("_", "-")}="{value}"' for name, value in options.items())
    return f'<h1>Partner page</h1><script src="{server.url}/static/events/widget.js" data-channel="{slug}" {attributes} async></script>'


def test_widget_on_another_origin_shows_messages_within_a_second(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite, artifacts: Path
) -> None:
    slug = new_channel(site, host_site.origin)
    page.goto(host_site.page("scores.html", widget_tag(server, slug, title="Live scores", theme="light")))
    expect(page.locator(".pushsite-widget .state")).to_have_text("Live", timeout=10_000)
    items = page.locator(".pushsite-widget li span")

    publish(server, api_key, slug, "Reds 1 - 0 Blues")
    published = time.monotonic()
    expect(items.first).to_have_text("Reds 1 - 0 Blues", timeout=1_000)
    print(f"widget showed the message {1000 * (time.monotonic() - published):.0f} ms after the API answered")

    publish(server, api_key, slug, '<img src=x onerror="document.title=1">')
    expect(items.first).to_have_text('<img src=x onerror="document.title=1">', timeout=1_000)
    assert page.locator(".pushsite-widget img").count() == 0
    page.locator(".pushsite-widget").screenshot(path=artifacts / "widget-light.png")

    # The host page's CSS cannot reach inside the widget.
    page.add_style_tag(content="li, span, h2 { color: rgb(255, 0, 0) !important; display: none !important; }")
    expect(items.first).to_be_visible()


def test_widget_dark_theme(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite, artifacts: Path
) -> None:
    slug = new_channel(site, host_site.origin)
    publish(server, api_key, slug, "Before the page opened")
    page.goto(
        host_site.page("dark.html", widget_tag(server, slug, title="Status", theme="dark", max_items="3"))
    )
    expect(page.locator(".pushsite-widget .state")).to_have_text("Live", timeout=10_000)
    for n in range(5):
        publish(server, api_key, slug, f"Update {n}")
    items = page.locator(".pushsite-widget li span")
    expect(items.first).to_have_text("Update 4", timeout=2_000)
    expect(items).to_have_count(3)
    background = page.locator(".pushsite-widget .feed").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(21, 24, 29)"
    page.locator(".pushsite-widget").screenshot(path=artifacts / "widget-dark.png")


def test_widget_on_an_origin_not_allowed_shows_a_readable_error(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite
) -> None:
    slug = new_channel(site, "https://somewhere-else.example")
    page.goto(host_site.page("refused.html", widget_tag(server, slug)))
    error = page.locator(".pushsite-widget .error")
    expect(error).to_contain_text("does not allow pages from", timeout=10_000)
    expect(page.locator(".pushsite-widget .state")).to_have_text("Unavailable")
    publish(server, api_key, slug, "never shown")
    expect(page.locator(".pushsite-widget li")).to_have_count(0)


def test_page_reload_shows_the_latest_items_each_once(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite
) -> None:
    slug = new_channel(site, host_site.origin)
    url = host_site.page("reload-rewind.html", widget_tag(server, slug, max_items="3"))
    page.goto(url)
    expect(page.locator(".pushsite-widget .state")).to_have_text("Live", timeout=10_000)
    publish(server, api_key, slug, "one")
    items = page.locator(".pushsite-widget li span")
    expect(items.first).to_have_text("one", timeout=2_000)

    page.goto("about:blank")
    publish(server, api_key, slug, "two")
    publish(server, api_key, slug, "three")
    publish(server, api_key, slug, "four")
    page.goto(url)
    # The default rewind is data-max-items: the latest three, newest first, none twice.
    expect(items).to_have_text(["four", "three", "two"], timeout=5_000)
    publish(server, api_key, slug, "five")
    expect(items).to_have_text(["five", "four", "three"], timeout=2_000)


def test_page_reload_with_rewind_0_resumes_without_loss_or_repeats(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite
) -> None:
    slug = new_channel(site, host_site.origin)
    url = host_site.page("reload.html", widget_tag(server, slug, rewind="0"))
    page.goto(url)
    expect(page.locator(".pushsite-widget .state")).to_have_text("Live", timeout=10_000)
    publish(server, api_key, slug, "one")
    items = page.locator(".pushsite-widget li span")
    expect(items.first).to_have_text("one", timeout=2_000)

    page.goto("about:blank")  # the page is gone: its stream is closed
    publish(server, api_key, slug, "two")
    publish(server, api_key, slug, "three")
    page.goto(url)
    expect(items).to_have_text(
        ["three", "two"], timeout=5_000
    )  # resumed from sessionStorage, "one" not repeated
    publish(server, api_key, slug, "four")
    expect(items).to_have_text(["four", "three", "two"], timeout=2_000)


def test_iframe_embed_from_an_allowed_origin_only(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite
) -> None:
    slug = new_channel(site, host_site.origin)
    frame_tag = f'<iframe src="{server.url}/embed/{slug}/?theme=dark" width="420" height="300"></iframe>'
    page.goto(host_site.page("iframe.html", frame_tag))
    frame = page.frame_locator("iframe")
    expect(frame.locator(".pushsite-widget .state")).to_have_text("Live", timeout=10_000)
    publish(server, api_key, slug, "inside the frame")
    expect(frame.locator(".pushsite-widget li span").first).to_have_text("inside the frame", timeout=1_000)

    other = new_channel(site, "https://another-partner.example")
    refused_messages: list[str] = []
    page.on("console", lambda message: refused_messages.append(message.text))
    page.goto(host_site.page("iframe-refused.html", frame_tag.replace(slug, other)))
    page.wait_for_load_state("load")
    embedded = page.frames[1] if len(page.frames) > 1 else None
    assert embedded is not None
    # The browser refuses to render it, and says why.
    assert embedded.url.startswith("chrome-error://")
    assert any("frame-ancestors https://another-partner.example" in text for text in refused_messages)
