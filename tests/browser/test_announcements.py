"""A staff user publishes, edits and retracts an announcement; open pages follow without reloading."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess, Site


def test_announcement_lifecycle_reaches_open_pages(
    browser: Browser, page: Page, server: ServerProcess, site: Site, artifacts: Path
) -> None:
    site.create_channels("news")
    site.shell(
        "from django.contrib.auth.models import User\n"
        "User.objects.filter(username='announcer').delete()\n"
        "User.objects.create_superuser('announcer', '', 'announce-pw-123')\n"
    )
    visitor = browser.new_context(viewport={"width": 1000, "height": 600}).new_page()
    visitor.goto(f"{server.url}/")
    banner = visitor.locator(".pushsite-announcements")
    expect(banner).to_have_attribute("role", "status")
    expect(banner).to_have_attribute("aria-live", "polite")
    expect(visitor.locator(".pushsite-announcement")).to_have_count(0)
    # Wait until the banner's stream is open before publishing.
    expect(banner).to_have_attribute("data-state", "open", timeout=10_000)

    page.goto(f"{server.url}/admin/login/?next=/admin/announcements/announcement/add/")
    page.fill("#id_username", "announcer")
    page.fill("#id_password", "announce-pw-123")
    page.click("input[type=submit]")
    page.select_option("#id_channel", label="news")
    page.fill("#id_title", "Planned maintenance")
    page.fill("#id_body", "The site is read-only tonight from 22:00 <b>UTC</b>.")
    page.select_option("#id_level", "warning")
    page.click("input[name=_publish_now]")
    clicked = time.monotonic()
    expect(page.locator(".messagelist")).to_contain_text("Published")
    change_url = page.url

    shown = visitor.locator(".pushsite-announcement")
    expect(shown).to_have_count(1, timeout=1_000)
    print(
        f"banner showed the announcement {1000 * (time.monotonic() - clicked):.0f} ms after the admin answered"
    )
    expect(shown.locator(".pushsite-announcement-title")).to_have_text("Planned maintenance")
    expect(shown.locator(".pushsite-announcement-body")).to_have_text(
        "The site is read-only tonight from 22:00 <b>UTC</b>."
    )
    expect(shown).to_have_class("pushsite-announcement pushsite-warning")
    visitor.screenshot(path=artifacts / "announcement-banner.png")

    # A page opened now shows it at once, rendered by the server.
    late = browser.new_context().new_page()
    late.route("**/events/**", lambda route: route.abort())  # no stream: only what the server rendered
    late.goto(f"{server.url}/")
    expect(late.locator(".pushsite-announcement-title")).to_have_text("Planned maintenance")
    late.context.close()

    page.fill("#id_body", "Postponed to tomorrow.")
    page.click("input[name=_save]")
    expect(shown.locator(".pushsite-announcement-body")).to_have_text("Postponed to tomorrow.", timeout=1_000)

    page.goto(change_url)
    page.click("input[name=_retract]")
    expect(visitor.locator(".pushsite-announcement")).to_have_count(0, timeout=1_000)
    visitor.context.close()


def test_dismissing_an_announcement(browser: Browser, server: ServerProcess, site: Site) -> None:
    site.create_channels("news")
    site.shell(
        "from events.announcements.models import Announcement\nfrom events.models import Channel\n"
        "from events.announcements import workflow as announcements\n"
        "a = Announcement.objects.create(channel=Channel.objects.get(slug='news'), title='Dismiss me', body='Body')\n"
        "announcements.publish_now(a, 'test')\n"
    )
    page = browser.new_context().new_page()
    page.goto(f"{server.url}/")
    box = page.locator(".pushsite-announcement", has_text="Dismiss me")
    expect(box).to_have_count(1)
    page.keyboard.press("Tab")  # keyboard users reach the dismiss button
    box.locator(".pushsite-dismiss").focus()
    page.keyboard.press("Enter")
    expect(box).to_have_count(0)
    page.reload()
    expect(page.locator(".pushsite-announcement", has_text="Dismiss me")).to_have_count(0)
    page.context.close()
