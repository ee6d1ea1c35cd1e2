"""Announcements: the workflow, the admin forms and actions, the banner tag, the operations view."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import close_old_connections
from django.template import Context, Template
from django.test import Client, override_settings
from django.utils import timezone

from events.announcements import workflow as announcements
from events.announcements.models import Announcement, AnnouncementState
from events.models import ApiKey, Channel, Message
from events.ops.models import ServerCensus
from events.provisioning import upsert_channel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def news() -> Channel:
    return upsert_channel("news")[0]


@pytest.fixture
def staff_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("editor", "", "pw"))
    return client


def sent(channel: Channel) -> list[Any]:
    return [
        m.data for m in Message.objects.filter(channel=channel, event="announcement").order_by("sequence")
    ]


def make(news: Channel, **fields: Any) -> Announcement:
    return Announcement.objects.create(channel=news, title="Maintenance", body="Tonight 22:00", **fields)


def test_publish_edit_retract_are_each_a_message(news: Channel) -> None:
    announcement = make(news)
    announcements.publish_now(announcement, "user:editor")
    announcement.body = "Moved to 23:00"
    announcements.save_edit(announcement, "user:editor")
    announcements.retract(announcement, "user:editor")
    actions = [(data["action"], data["version"], data["body"]) for data in sent(news)]
    assert actions == [
        ("published", 1, "Tonight 22:00"),
        ("updated", 2, "Moved to 23:00"),
        ("retracted", 3, "Moved to 23:00"),
    ]
    assert Message.objects.get(event="announcement", sequence=1).publisher == "user:editor"


def test_editing_a_draft_sends_nothing(news: Channel) -> None:
    announcement = make(news)
    announcement.title = "Changed"
    announcements.save_edit(announcement, "user:editor")
    announcements.retract(announcement, "user:editor")
    assert sent(news) == []


def test_scheduled_announcement_is_published_once_even_when_raced(news: Channel) -> None:
    announcement = make(news)
    announcements.schedule(announcement, timezone.now() - timedelta(seconds=1))
    counts: list[int] = []

    def scheduler() -> None:
        try:
            counts.append(announcements.publish_due())
        finally:
            close_old_connections()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(counts) == [0, 0, 0, 1]
    assert [data["action"] for data in sent(news)] == ["published"]
    assert Announcement.objects.get().state == AnnouncementState.PUBLISHED


def test_not_yet_due_is_left_alone_and_expiry_is_sent_once(news: Channel) -> None:
    later = make(news)
    announcements.schedule(later, timezone.now() + timedelta(hours=1))
    assert announcements.publish_due() == 0
    soon = make(news, expires_at=timezone.now() + timedelta(hours=1))
    announcements.publish_now(soon, "user:editor")
    assert announcements.expire_due(timezone.now() + timedelta(hours=2)) == 1
    assert announcements.expire_due(timezone.now() + timedelta(hours=3)) == 0
    assert [data["action"] for data in sent(news)] == ["published", "expired"]


def test_an_announcement_on_a_switched_off_channel_holds_up_no_other(news: Channel) -> None:
    # One due announcement whose channel was deactivated made publish_due raise on every
    # tick of every process: the others due after it, and every expiry, never went out.
    off = upsert_channel("off")[0]
    now = timezone.now()
    stuck = make(off, expires_at=now + timedelta(hours=1))
    announcements.publish_now(stuck, "user:editor")
    stuck_later = make(off)
    announcements.schedule(stuck_later, now - timedelta(seconds=1))  # the newest: tried first
    waiting = make(news, expires_at=now + timedelta(hours=1))
    announcements.schedule(waiting, now - timedelta(seconds=2))
    Channel.objects.filter(pk=off.pk).update(is_active=False)
    assert announcements.publish_due() == 1
    assert announcements.expire_due(now + timedelta(hours=2)) == 1
    assert [data["action"] for data in sent(news)] == ["published", "expired"]
    # Left as they were: switched on again, the channel gets them.
    assert Announcement.objects.get(pk=stuck_later.pk).state == AnnouncementState.SCHEDULED
    Channel.objects.filter(pk=off.pk).update(is_active=True)
    assert announcements.publish_due() == 1
    assert announcements.expire_due(now + timedelta(hours=2)) == 1
    assert [data["action"] for data in sent(off)] == ["published", "published", "expired"]


def test_banner_tag_renders_live_announcements_as_text(news: Channel) -> None:
    live = make(news, expires_at=timezone.now() + timedelta(hours=1))
    live.title = "<script>alert(1)</script>"
    announcements.publish_now(live, "user:editor")
    announcements.publish_now(make(news), "user:editor")
    gone = make(news)
    announcements.publish_now(gone, "user:editor")
    announcements.retract(gone, "user:editor")
    expired = make(news, expires_at=timezone.now() + timedelta(seconds=1))
    announcements.publish_now(expired, "user:editor")
    Announcement.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    html = Template('{% load pushsite %}{% live_announcements "news" %}').render(Context())
    assert html.count('class="pushsite-announcement ') == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert f'data-position="{Channel.objects.get(slug="news").last_sequence}"' in html
    assert 'role="status" aria-live="polite"' in html
    assert "no active channel" in Template('{% load pushsite %}{% live_announcements "nope" %}').render(
        Context()
    )


# --- the admin -----------------------------------------------------------------------


def announcement_form(news: Channel, **overrides: str) -> dict[str, str]:
    data = {"channel": str(news.pk), "title": "Deploy", "body": "New version", "level": "info", "link": ""}
    data.update({"publish_at_0": "", "publish_at_1": "", "expires_at_0": "", "expires_at_1": ""})
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"body": "   "}, "This field is required"),
        ({"body": ""}, "This field is required"),
        ({"expires_at_0": "2001-01-01", "expires_at_1": "10:00"}, "This expiry is in the past"),
        ({"link": "javascript:alert(1)"}, "Enter a valid URL"),
        ({"_schedule": "1"}, "Choose when to publish it"),
        (
            {"_schedule": "1", "publish_at_0": "2001-01-01", "publish_at_1": "10:00"},
            "This time is in the past",
        ),
    ],
)
def test_announcement_form_errors_are_readable(
    staff_client: Client, news: Channel, overrides: dict[str, str], message: str
) -> None:
    response = staff_client.post(
        "/admin/announcements/announcement/add/", announcement_form(news, **overrides)
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Announcement.objects.exists()
    assert sent(news) == []


@pytest.mark.parametrize("button", ["_publish_now", "_retract"])
def test_admin_refuses_to_publish_to_a_switched_off_channel(
    staff_client: Client, news: Channel, button: str
) -> None:
    # Was a 500 (ChannelNotFound out of the admin view); the form now says what is wrong.
    announcement = make(news)
    announcements.publish_now(announcement, "user:editor")
    Channel.objects.filter(pk=news.pk).update(is_active=False)
    response = staff_client.post(
        f"/admin/announcements/announcement/{announcement.pk}/change/",
        announcement_form(news, **{button: "1"}),
    )
    assert response.status_code == 200
    assert "This channel is switched off" in response.content.decode()
    assert Announcement.objects.get().state == AnnouncementState.PUBLISHED
    assert [data["action"] for data in sent(news)] == ["published"]


def test_the_retract_action_passes_over_a_switched_off_channel(staff_client: Client, news: Channel) -> None:
    off = upsert_channel("off")[0]
    stuck, live = make(off), make(news)
    announcements.publish_now(stuck, "user:editor")
    announcements.publish_now(live, "user:editor")
    Channel.objects.filter(pk=off.pk).update(is_active=False)
    response = staff_client.post(
        "/admin/announcements/announcement/",
        {"action": "retract_selected", "_selected_action": [stuck.pk, live.pk]},
    )
    assert response.status_code == 302  # was a 500: ChannelNotFound out of the action
    assert Announcement.objects.get(pk=live.pk).state == AnnouncementState.RETRACTED
    assert Announcement.objects.get(pk=stuck.pk).state == AnnouncementState.PUBLISHED
    assert [data["action"] for data in sent(news)] == ["published", "retracted"]


def test_admin_publish_now_then_retract(staff_client: Client, news: Channel) -> None:
    response = staff_client.post(
        "/admin/announcements/announcement/add/", announcement_form(news, _publish_now="1")
    )
    assert response.status_code == 302
    announcement = Announcement.objects.get()
    assert announcement.state == AnnouncementState.PUBLISHED
    assert announcement.created_by == "editor"
    change = f"/admin/announcements/announcement/{announcement.pk}/change/"
    staff_client.post(change, announcement_form(news, body="Edited", _save="1"))
    staff_client.post(change, announcement_form(news, body="Edited", _retract="1"))
    assert [(d["action"], d["body"]) for d in sent(news)] == [
        ("published", "New version"),
        ("updated", "Edited"),
        ("retracted", "Edited"),
    ]


def test_admin_schedule(staff_client: Client, news: Channel) -> None:
    when = timezone.now() + timedelta(hours=2)
    response = staff_client.post(
        "/admin/announcements/announcement/add/",
        announcement_form(
            news, _schedule="1", publish_at_0=f"{when:%Y-%m-%d}", publish_at_1=f"{when:%H:%M:%S}"
        ),
    )
    assert response.status_code == 302
    assert Announcement.objects.get().state == AnnouncementState.SCHEDULED
    assert sent(news) == []


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ("https://ok.example\nhttps://bad.example/path", "Line 2: https://bad.example/path is not an origin"),
        ("partner.example", "Line 1: partner.example is not an origin"),
        ("ftp://files.example", "Line 1: ftp://files.example is not an origin"),
    ],
)
def test_channel_form_explains_a_bad_origin(
    staff_client: Client, news: Channel, origins: str, message: str
) -> None:
    data = {
        "slug": "news",
        "title": "",
        "description": "",
        "is_active": "on",
        "visibility": "public",
        "allowed_origins": origins,
        "retention_count": "1000",
        "retention_age": "",
        "stream_storage": "keep",
        "kind": "feed",
    }
    response = staff_client.post(f"/admin/events/channel/{news.pk}/change/", data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert Channel.objects.get(pk=news.pk).allowed_origins == []


def test_channel_form_saves_origins_one_per_line(staff_client: Client, news: Channel) -> None:
    data = {
        "slug": "news",
        "title": "",
        "description": "",
        "is_active": "on",
        "visibility": "public",
        "allowed_origins": " https://a.example \n\nhttp://localhost:8080\nhttps://a.example",
        "retention_count": "1000",
        "retention_age": "",
        "stream_storage": "keep",
        "kind": "feed",
    }
    assert staff_client.post(f"/admin/events/channel/{news.pk}/change/", data).status_code == 302
    assert Channel.objects.get(pk=news.pk).allowed_origins == ["https://a.example", "http://localhost:8080"]
    bad_slug = dict(data, slug="not a slug!")
    assert (
        "Enter a valid “slug”"
        in staff_client.post(f"/admin/events/channel/{news.pk}/change/", bad_slug).content.decode()
    )


def test_channel_list_shows_live_subscribers_and_sends_test_messages(
    staff_client: Client, news: Channel
) -> None:
    now = timezone.now()
    ServerCensus.objects.create(
        process="a:1", connections=3, channels={"news": 3}, started_at=now, updated_at=now
    )
    ServerCensus.objects.create(
        process="b:2", connections=2, channels={"news": 2}, started_at=now, updated_at=now
    )
    stale = now - timedelta(minutes=5)
    ServerCensus.objects.create(
        process="c:3", connections=9, channels={"news": 9}, started_at=stale, updated_at=stale
    )
    page = staff_client.get("/admin/events/channel/").content.decode()
    assert '<td class="field-subscribers">5</td>' in page
    staff_client.post(
        "/admin/events/channel/", {"action": "send_test_message", "_selected_action": [news.pk]}
    )
    message = Message.objects.get(channel=news)
    assert (message.event, message.data) == ("test", {"text": "Test message from editor"})
    operations = staff_client.get("/admin/events/channel/operations/")
    assert operations.status_code == 200
    body = operations.content.decode()
    assert "5 open connections on 2 server processes" in body
    assert "<td>news</td><td>5</td>" in body


def test_api_keys_in_the_admin(staff_client: Client, news: Channel) -> None:
    response = staff_client.post(
        "/admin/events/apikey/add/",
        {"name": "partner", "is_active": "on", "channels": [news.pk]},
        follow=True,
    )
    body = response.content.decode()
    assert "shown only this once: psk_" in body
    key = ApiKey.objects.get(name="partner")
    secret = body.split("shown only this once: ")[1].split("<")[0].strip()
    assert key.matches(secret)
    assert secret not in staff_client.get(f"/admin/events/apikey/{key.pk}/change/").content.decode()
    staff_client.post("/admin/events/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert not ApiKey.objects.get(pk=key.pk).is_active


# --- Admin actions need the permission their change needs -----------------------------


def test_a_view_only_editor_cannot_revoke_keys_or_retract_announcements(
    client: Client, news: Channel
) -> None:
    # A staff user who may only look at keys and announcements saw the actions in the
    # list and ran them: revoking every key and retracting every announcement of the site.
    viewer = User.objects.create_user("viewer", "", "pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_apikey", "view_announcement", "view_channel"])
    )
    client.force_login(viewer)
    key, _secret = ApiKey.generate("partner")
    key.save()
    announcement = make(news)
    announcements.publish_now(announcement, "user:editor")
    keys = client.get("/admin/events/apikey/")
    assert keys.status_code == 200
    assert 'value="revoke"' not in keys.content.decode()
    client.post("/admin/events/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    client.post(
        "/admin/announcements/announcement/",
        {"action": "retract_selected", "_selected_action": [announcement.pk]},
    )
    assert ApiKey.objects.get(pk=key.pk).is_active
    assert Announcement.objects.get(pk=announcement.pk).state == AnnouncementState.PUBLISHED
    assert [d["action"] for d in sent(news)] == ["published"]
    # With the permission to change them, the same actions work.
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_apikey", "change_announcement"])
    )
    client.post("/admin/events/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    client.post(
        "/admin/announcements/announcement/",
        {"action": "retract_selected", "_selected_action": [announcement.pk]},
    )
    assert not ApiKey.objects.get(pk=key.pk).is_active
    assert Announcement.objects.get(pk=announcement.pk).state == AnnouncementState.RETRACTED


# --- The per-user publish rate holds on the admin's roads as on the API's ------------


@pytest.mark.usefixtures("empty_cache")
@override_settings(PUSHSITE={"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 600})
def test_admin_publishing_counts_against_the_editors_publish_rate(
    staff_client: Client, news: Channel
) -> None:
    # Two publishes through the JSON API (the editor's session) spend the window...
    for n in range(2):
        response = staff_client.post(
            "/api/channels/news/messages", {"data": n}, content_type="application/json"
        )
        assert response.status_code == 201
    assert (
        staff_client.post(
            "/api/channels/news/messages", {"data": 3}, content_type="application/json"
        ).status_code
        == 429
    )
    # ...and the admin's roads are the same editor: no more publishes there either.
    response = staff_client.post(
        "/admin/announcements/announcement/add/", announcement_form(news, _publish_now="1")
    )
    assert response.status_code == 200  # the form again, with the reason
    assert "Nothing was published: This user is publishing too fast." in response.content.decode()
    assert sent(news) == []
    assert not Announcement.objects.exists()
    response = staff_client.post(
        "/admin/events/channel/", {"action": "send_test_message", "_selected_action": [news.pk]}, follow=True
    )
    assert "Stopped: This user is publishing too fast." in response.content.decode()
    assert "Sent a test message to 0 channel(s)." in response.content.decode()
    assert Message.objects.filter(channel=news, event="test").count() == 0


@pytest.mark.usefixtures("empty_cache")
@override_settings(PUSHSITE={"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 600})
def test_the_retract_action_stops_at_the_editors_publish_rate(staff_client: Client, news: Channel) -> None:
    published = [make(news) for _ in range(3)]
    for announcement in published:
        announcements.publish_now(announcement, "user:editor")  # the workflow itself counts nothing
    response = staff_client.post(
        "/admin/announcements/announcement/",
        {"action": "retract_selected", "_selected_action": [a.pk for a in published]},
        follow=True,
    )
    body = response.content.decode()
    assert "Stopped: This user is publishing too fast." in body
    assert "Retracted 2 announcement(s)." in body
    assert Announcement.objects.filter(state=AnnouncementState.RETRACTED).count() == 2
    assert [d["action"] for d in sent(news)].count("retracted") == 2
