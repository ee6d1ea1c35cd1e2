"""Chat rooms in a real browser: two people, presence, safety, moderation, seven tabs."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, ViewportSize, expect

from tests.support.servers import ServerProcess, Site

ROOMS = 8
PASSWORD = "chat-test-password-1"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
DESKTOP: ViewportSize = {"width": 1100, "height": 760}
PHONE: ViewportSize = {"width": 390, "height": 800}

_rooms = itertools.count()


@pytest.fixture(scope="module")
def people(site: Site) -> list[str]:
    """Chat rooms (guests welcome) and users, made in one process start."""
    site.shell(
        "from django.contrib.auth.models import User\n"
        "from events.provisioning import upsert_channel\n"
        f"for n in range({ROOMS}): upsert_channel(f'chat-{{n}}', title=f'Room {{n}}', kind='chat', guests_may_post=True)\n"
        f"for name in {USERS!r}:\n"
        "    User.objects.filter(username=name).delete()\n"
        f"    User.objects.create_user(name, password={PASSWORD!r})\n"
        "User.objects.filter(username='moderator').delete()\n"
        f"User.objects.create_user('moderator', password={PASSWORD!r}, is_staff=True)\n"
    )
    return USERS


@pytest.fixture
def room(people: list[str]) -> str:
    number = next(_rooms)
    assert number < ROOMS, "raise ROOMS in tests/browser/test_chat.py"
    return f"chat-{number}"


class People:
    """Browser contexts, one per person, closed at the end of the test."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []

    def context(self, name: str | None, viewport: ViewportSize = DESKTOP) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        if name is not None:
            page = context.new_page()
            page.goto(f"{self.server.url}/accounts/login/?next=/rooms/")
            page.fill("#id_username", name)
            page.fill("#id_password", PASSWORD)
            page.click("form.login button")
            page.wait_for_url("**/rooms/")
            page.close()
        return context

    def in_room(self, name: str | None, room: str, viewport: ViewportSize = DESKTOP) -> Page:
        page = self.context(name, viewport).new_page()
        open_room(page, self.server, room)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def open_room(page: Page, server: ServerProcess, room: str) -> None:
    page.goto(f"{server.url}/rooms/{room}/")
    expect(page.locator("#status")).to_have_text("Live", timeout=10_000)


@pytest.fixture
def crowd(browser: Browser, server: ServerProcess) -> Iterator[People]:
    people = People(browser, server)
    yield people
    people.close()


def tab_to(page: Page, element_id: str, limit: int = 30) -> None:
    """Move the focus with the Tab key until it reaches the element."""
    for _ in range(limit):
        if page.evaluate("(id) => document.activeElement?.id === id", element_id):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached #{element_id}")


def say(page: Page, text: str) -> None:
    """Type and send with the keyboard only."""
    tab_to(page, "text")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def texts(page: Page) -> list[str]:
    return page.locator("#log .msg .text").all_text_contents()


def test_two_people_talk_and_see_who_is_here(crowd: People, room: str, artifacts: Path) -> None:
    alice = crowd.in_room("alice", room)
    bob = crowd.in_room("bob", room)
    expect(alice.locator("#here li")).to_have_text(["alice", "bob"], timeout=3_000)
    expect(bob.locator("#here li")).to_have_text(["alice", "bob"], timeout=3_000)
    expect(alice.locator("#here-count")).to_have_text("2")

    say(alice, "Hello Bob")
    sent = time.monotonic()
    expect(bob.locator("#log .msg .text").last).to_have_text("Hello Bob", timeout=1_000)
    print(f"bob saw alice's message {1000 * (time.monotonic() - sent):.0f} ms after she pressed Enter")
    expect(alice.locator("#log .msg .text").last).to_have_text("Hello Bob", timeout=1_000)
    expect(alice.locator("#text")).to_have_value("")
    expect(alice.locator("#text")).to_be_focused()

    say(bob, "Hi Alice, over and out")
    expect(alice.locator("#log .msg .text").last).to_have_text("Hi Alice, over and out", timeout=1_000)
    expect(alice.locator("#log .msg .who").last).to_have_text("bob")
    alice.screenshot(path=artifacts / "chat-desktop.png")
    alice.set_viewport_size(PHONE)
    expect(alice.locator("#text")).to_be_visible()
    alice.screenshot(path=artifacts / "chat-phone.png")
    width = alice.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the room must not scroll sideways on a phone"

    # Bob's browser goes away without a word: the TCP connection closes.
    crowd.contexts[1].close()
    expect(alice.locator("#here li")).to_have_text(["alice"], timeout=2_000)
    expect(alice.locator("#here-count")).to_have_text("1")

    # A reload renders what was said, in order, from the server.
    alice.reload()
    expect(alice.locator("#status")).to_have_text("Live", timeout=10_000)
    assert texts(alice) == ["Hello Bob", "Hi Alice, over and out"]


def test_markup_is_shown_as_text_and_never_runs(crowd: People, room: str) -> None:
    dialogs: list[str] = []
    alice = crowd.in_room("alice", room)
    guest = crowd.in_room(None, room)

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for page in (alice, guest):
        page.on("dialog", dismiss)

    # The guest picks a nickname (the page reloads with it) and talks too.
    tab_to(guest, "nickname")
    guest.keyboard.type("Visitor")
    guest.keyboard.press("Enter")
    expect(guest.locator("#text")).to_be_visible(timeout=5_000)
    expect(guest.locator("#status")).to_have_text("Live", timeout=10_000)

    attacks = ["<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>"]
    for attack in attacks:
        say(alice, attack)
    expect(guest.locator("#log .msg .text")).to_have_text(attacks, timeout=1_000)
    say(guest, "<b>not bold</b> https://example.com/?q=<script>")
    expect(alice.locator("#log .msg .text").last).to_have_text(
        "<b>not bold</b> https://example.com/?q=<script>", timeout=1_000
    )
    expect(alice.locator("#log .msg .who").last).to_have_text("Visitor (guest)")
    for page in (alice, guest):
        page.reload()
        expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
        assert texts(page)[:2] == attacks
        assert page.locator("#log img, #log script, #log b, #log a").count() == 0
    assert dialogs == []


def test_posting_too_fast_shows_the_error(crowd: People, room: str) -> None:
    carol = crowd.in_room("carol", room)
    error = carol.locator("#post-error")
    # 5 per 10 s by default; a fixed window can split a burst, so up to 11 tries.
    for n in range(11):
        with carol.expect_response(lambda response: response.url.endswith("/messages")) as answer:
            say(carol, f"message {n}")
        if answer.value.status == 429:
            break
    expect(error).to_contain_text("You are sending messages too fast. Try again in ")
    expect(carol.locator("#text")).to_have_value(f"message {n}")  # kept for later


def test_a_staff_deletion_disappears_from_every_page(crowd: People, room: str) -> None:
    dave = crowd.in_room("dave", room)
    moderator = crowd.in_room("moderator", room)
    say(dave, "something regrettable")
    message = moderator.locator("#log .msg", has_text="something regrettable")
    expect(message).to_have_count(1, timeout=1_000)
    expect(dave.locator("#log .msg button")).to_have_count(0)  # no moderation buttons for others
    message.get_by_role("button", name="Delete this message from dave").click()
    expect(dave.locator("#log .msg", has_text="something regrettable")).to_have_count(0, timeout=1_000)
    expect(message).to_have_count(0)

    say(dave, "and more")
    expect(moderator.locator("#log .msg .text").last).to_have_text("and more", timeout=1_000)
    moderator.locator("#log .msg", has_text="and more").get_by_role("button", name="Mute dave").click()
    expect(moderator.locator("#status")).to_have_text("Muted dave for an hour.", timeout=2_000)
    say(dave, "can I still talk?")
    expect(dave.locator("#post-error")).to_have_text("A moderator has muted you in this room.", timeout=2_000)

    dave.reload()  # a page opened later does not show the deleted message either
    expect(dave.locator("#status")).to_have_text("Live", timeout=10_000)
    assert texts(dave) == ["and more"]


def test_seven_tabs_of_one_person_all_receive_messages(crowd: People, room: str) -> None:
    tabs_context = crowd.context("erin")
    tabs = [tabs_context.new_page() for _ in range(7)]
    for tab in tabs:
        open_room(tab, crowd.server, room)
    frank = crowd.in_room("frank", room)

    say(frank, "to every tab")
    for tab in tabs:
        expect(tab.locator("#log .msg .text").last).to_have_text("to every tab", timeout=3_000)
    # One person counts once, however many tabs.
    expect(frank.locator("#here li")).to_have_text(["erin", "frank"], timeout=2_000)

    say(tabs[6], "from the seventh tab")
    expect(frank.locator("#log .msg .text").last).to_have_text("from the seventh tab", timeout=3_000)
    for tab in tabs:
        expect(tab.locator("#log .msg .text").last).to_have_text("from the seventh tab", timeout=3_000)

    roles = [tab.locator("#room").get_attribute("data-role") for tab in tabs]
    assert roles.count("leader") == 1, roles
    # The tab holding the stream closes: another takes over and resumes.
    leader = tabs.pop(roles.index("leader"))
    leader.close()
    say(frank, "after the leader left")
    for tab in tabs:
        expect(tab.locator("#log .msg .text").last).to_have_text("after the leader left", timeout=3_000)
    assert [tab.locator("#room").get_attribute("data-role") for tab in tabs].count("leader") == 1
    for tab in tabs:
        assert texts(tab)[-3:] == ["to every tab", "from the seventh tab", "after the leader left"]
    expect(frank.locator("#here li")).to_have_text(["erin", "frank"])
