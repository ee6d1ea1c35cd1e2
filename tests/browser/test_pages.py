"""Channel pages and the text rule in a real browser: history on load, readable payloads, refusals."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser.conftest import HostSite
from tests.support.servers import ServerProcess, Site

_names = itertools.count()

PHONE: ViewportSize = {"width": 390, "height": 800}


def new_channel(site: Site, *args: str) -> str:
    slug = f"page-{next(_names)}"
    site.manage("create_channel", slug, *args)
    return slug


def publish(server: ServerProcess, key: str, slug: str, data: object, event: str = "message") -> None:
    response = httpx.post(
        f"{server.url}/api/channels/{slug}/messages",
        json={"event": event, "data": data},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201, response.text


# One rule, documented in docs/widgets.md ("How a message reads").
TEXT_RULE = [
    ("plain", "plain"),
    (42, "42"),
    (True, "true"),
    (None, ""),
    ({"text": "Hello", "title": "ignored"}, "Hello"),
    ({"title": "Maintenance", "body": "tonight at 22:00"}, "Maintenance — tonight at 22:00"),
    ({"title": "Release", "message": "2.0 is out"}, "Release — 2.0 is out"),
    ({"title": "Only a title"}, "Only a title"),
    ({"message": "Disk full", "status": "red"}, "Disk full"),
    ({"status": "degraded", "since": 3}, "degraded"),
    ({"match": "Reds v Blues", "home": 30, "away": 29}, "match: Reds v Blues, home: 30, away: 29"),
    ({"nested": {"a": [1, 2]}, "none": None}, 'nested: {"a":[1,2]}, none: '),
    ([1, "two", {"three": 3}], '1, two, {"three":3}'),
    ({"text": 5, "status": "ok"}, "ok"),
]


def test_the_text_rule(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    shown = page.evaluate(
        """async (values) => {
            const { messageText } = await import("/static/events/pushsite.js");
            return values.map(messageText);
        }""",
        [value for value, _ in TEXT_RULE],
    )
    assert shown == [text for _, text in TEXT_RULE]


def test_channel_page_shows_recent_history_then_goes_live(
    page: Page, server: ServerProcess, site: Site, api_key: str, artifacts: Path
) -> None:
    slug = new_channel(site, "--title", "Scores")
    publish(server, api_key, slug, {"match": "Reds v Blues", "home": 30, "away": 29}, event="score")
    publish(server, api_key, slug, {"text": "Half time"}, event="status")
    page.goto(f"{server.url}/channels/{slug}/")
    bodies = page.locator("#events .body")
    expect(bodies).to_have_text(["Half time", "match: Reds v Blues, home: 30, away: 29"], timeout=10_000)
    expect(page.locator("#status")).to_have_text("Live")
    expect(page.locator("#empty")).to_have_count(0)
    publish(server, api_key, slug, {"text": "Reds 31 - 29 Blues"}, event="score")
    expect(bodies).to_have_text(
        ["Reds 31 - 29 Blues", "Half time", "match: Reds v Blues, home: 30, away: 29"], timeout=2_000
    )
    page.screenshot(path=artifacts / "channel-page-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=artifacts / "channel-page-phone.png", full_page=True)


def test_an_empty_channel_page_says_so_until_the_first_message(
    page: Page, server: ServerProcess, site: Site, api_key: str
) -> None:
    slug = new_channel(site)
    page.goto(f"{server.url}/channels/{slug}/")
    empty = page.locator("#empty")
    expect(empty).to_have_text("No messages yet: new ones appear here as they are published.")
    expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
    publish(server, api_key, slug, "first")
    expect(page.locator("#events .body")).to_have_text(["first"], timeout=2_000)
    expect(empty).to_be_hidden()


def test_a_private_channel_page_offers_a_logged_out_visitor_a_login_and_opens_no_stream(
    page: Page, server: ServerProcess, artifacts: Path
) -> None:
    # A private channel answers like a missing one (docs/security.md), so the page
    # is the 404, which offers a login without saying whether the channel exists.
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events/private-room/" in r.url else None)
    response = page.goto(f"{server.url}/channels/private-room/")
    assert response is not None
    assert response.status == 404
    link = page.locator("main a", has_text="log in")
    assert link.get_attribute("href") == "/accounts/login/?next=/channels/private-room/"
    assert streams == []
    page.screenshot(path=artifacts / "channel-page-login.png")
    link.click()
    expect(page).to_have_url(f"{server.url}/accounts/login/?next=/channels/private-room/")


def test_a_chat_room_channel_page_redirects_to_the_room(
    page: Page, server: ServerProcess, site: Site
) -> None:
    slug = new_channel(site, "--kind", "chat")
    page.goto(f"{server.url}/channels/{slug}/")
    expect(page).to_have_url(f"{server.url}/rooms/{slug}/")


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
def test_widget_on_another_origin_shows_the_latest_value_on_load(
    page: Page,
    server: ServerProcess,
    site: Site,
    api_key: str,
    host_site: HostSite,
    artifacts: Path,
    viewport: ViewportSize | None,
) -> None:
    slug = new_channel(site, "--title", "Cup final", "--allow-origin", host_site.origin)
    for home in range(1, 4):
        publish(server, api_key, slug, {"match": "Reds v Blues", "home": home, "away": 0}, event="score")
    if viewport:
        page.set_viewport_size(viewport)
    tag = f'<script src="{server.url}/static/events/widget.js" data-channel="{slug}" data-max-items="2" async></script>'
    page.goto(host_site.page("latest.html", tag))
    widget = page.locator(".pushsite-widget")
    expect(widget.locator("li span")).to_have_text(
        ["match: Reds v Blues, home: 3, away: 0", "match: Reds v Blues, home: 2, away: 0"], timeout=10_000
    )
    expect(widget.locator("h2")).to_have_text("Cup final")  # the channel's title by default
    expect(widget.locator(".state")).to_have_text("Live")
    expect(widget.locator(".empty")).to_be_hidden()
    name = "phone" if viewport else "desktop"
    page.screenshot(path=artifacts / f"widget-latest-{name}.png")


def test_widget_on_an_empty_channel_says_so(
    page: Page, server: ServerProcess, site: Site, api_key: str, host_site: HostSite
) -> None:
    slug = new_channel(site, "--allow-origin", host_site.origin)
    tag = f'<script src="{server.url}/static/events/widget.js" data-channel="{slug}" async></script>'
    page.goto(host_site.page("empty.html", tag))
    widget = page.locator(".pushsite-widget")
    expect(widget.locator(".state")).to_have_text("Live", timeout=10_000)
    expect(widget.locator(".empty")).to_have_text("No updates yet.")
    expect(widget.locator("h2")).to_have_text(slug)  # no title: the slug
    publish(server, api_key, slug, {"status": "all good"})
    expect(widget.locator("li span")).to_have_text(["all good"], timeout=2_000)
    expect(widget.locator(".empty")).to_be_hidden()


def test_widget_error_replaces_the_waiting_line(
    page: Page, server: ServerProcess, host_site: HostSite, artifacts: Path
) -> None:
    tag = f'<script src="{server.url}/static/events/widget.js" data-channel="no-such-channel" async></script>'
    page.goto(host_site.page("missing.html", tag))
    widget = page.locator(".pushsite-widget")
    expect(widget.locator(".error")).to_have_text(
        "This channel does not exist, is switched off, or needs you to log in: check its name.",
        timeout=10_000,
    )
    expect(widget.locator(".empty")).to_be_hidden()
    expect(widget.locator(".state")).to_have_text("Unavailable")
    widget.screenshot(path=artifacts / "widget-missing.png")


def test_widget_on_a_private_channel_says_it_may_need_a_login(
    page: Page, server: ServerProcess, host_site: HostSite
) -> None:
    tag = f'<script src="{server.url}/static/events/widget.js" data-channel="private-room" async></script>'
    page.goto(host_site.page("private.html", tag))
    widget = page.locator(".pushsite-widget")
    expect(widget.locator(".error")).to_have_text(
        "This channel does not exist, is switched off, or needs you to log in: check its name.",
        timeout=10_000,
    )
    expect(widget.locator(".empty")).to_be_hidden()


OPERATOR_PASSWORD = "operator-password-0123"


@pytest.fixture(scope="module")
def operator(site: Site) -> str:
    site.shell(
        "from django.contrib.auth.models import User\n"
        "User.objects.filter(username='operator').delete()\n"
        f"User.objects.create_user('operator', password={OPERATOR_PASSWORD!r}, is_staff=True)\n"
    )
    return "operator"


def chart_total(page: Page, chart: str) -> float:
    return float(
        page.locator(f"#{chart}").evaluate(
            "f => [...f.querySelectorAll('rect')].reduce((sum, r) => sum + Number(r.dataset.value), 0)"
        )
    )


def measured(page: Page) -> int:
    """Messages whose delivery latency the latency chart counts (from each bar's title)."""
    titles = page.locator("#chart-latency rect title").all_text_contents()
    counts = [re.search(r"(\d+) messages$", title) for title in titles]
    return sum(int(count.group(1)) for count in counts if count is not None)


def test_operations_charts_update_live(
    browser: Browser, server: ServerProcess, site: Site, api_key: str, operator: str, artifacts: Path
) -> None:
    slug = new_channel(site, "--title", "Watched")
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/accounts/login/?next=/")
        page.fill("#id_username", operator)
        page.fill("#id_password", OPERATOR_PASSWORD)
        page.click("form.login button")
        page.wait_for_url(f"{server.url}/")
        page.click("text=Operations")  # the site's navigation, for staff
        expect(page.locator("#chart-messages")).to_be_visible(timeout=10_000)
        messages_before = chart_total(page, "chart-messages")
        measured_before = measured(page)

        reader = context.new_page()  # a subscriber, so this process delivers and measures
        reader.goto(f"{server.url}/channels/{slug}/")
        expect(reader.locator("#status")).to_have_text("Live", timeout=10_000)
        for n in range(3):
            publish(server, api_key, slug, {"text": f"tick {n}"})
        expect(reader.locator("#events .body")).to_have_count(3, timeout=5_000)

        # The page redraws itself every 5 s; nobody reloads it here.
        page.wait_for_function(
            """([before]) => {
                const rects = document.querySelectorAll('#chart-messages rect');
                return [...rects].reduce((s, r) => s + Number(r.dataset.value), 0) >= before + 3;
            }""",
            arg=[messages_before],
            timeout=15_000,
        )
        assert chart_total(page, "chart-messages") >= messages_before + 3
        assert measured(page) >= measured_before + 3  # each delivery's latency is in the chart
        streams = page.locator("#chart-streams rect title")
        expect(streams.filter(has_text=slug)).to_have_count(1, timeout=15_000)
        page.screenshot(path=artifacts / "operations-desktop.png", full_page=True)
        page.set_viewport_size(PHONE)
        page.screenshot(path=artifacts / "operations-phone.png", full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "phone"])
def test_home_and_not_found_pages(
    page: Page, server: ServerProcess, site: Site, artifacts: Path, viewport: ViewportSize | None
) -> None:
    room = new_channel(site, "--kind", "chat")
    title = f"Tea room {room}"
    site.manage("create_channel", room, "--title", title)
    if viewport:
        page.set_viewport_size(viewport)
    name = "phone" if viewport else "desktop"
    page.goto(f"{server.url}/")
    expect(page.locator("#room-list a", has_text=title)).to_have_attribute("href", f"/rooms/{room}/")
    expect(page.locator("#feed-list a", has_text=title)).to_have_count(0)
    page.screenshot(path=artifacts / f"home-{name}.png", full_page=True)
    response = page.goto(f"{server.url}/channels/no-such-channel/")
    assert response is not None
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Nothing here")
    expect(page.locator(".site-header .brand")).to_be_visible()  # the site's own look
    page.screenshot(path=artifacts / f"not-found-{name}.png", full_page=True)


def test_widget_on_an_origin_not_allowed_says_this_site_may_not_show_it(
    page: Page, server: ServerProcess, site: Site, host_site: HostSite
) -> None:
    slug = new_channel(site, "--allow-origin", "https://partner.example")
    tag = f'<script src="{server.url}/static/events/widget.js" data-channel="{slug}" async></script>'
    page.goto(host_site.page("not-allowed.html", tag))
    error = page.locator(".pushsite-widget .error")
    expect(error).to_have_text(
        f"This site may not show this channel. The channel '{slug}' does not allow pages from "
        f"{host_site.origin} to subscribe.",
        timeout=10_000,
    )
    expect(page.locator(".pushsite-widget .empty")).to_be_hidden()
    assert page.locator(".pushsite-widget").evaluate("h => h.pushsite.stopped") is True
