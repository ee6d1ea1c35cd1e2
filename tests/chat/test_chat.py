"""Chat rooms in-process: the posting rules, moderation and the room page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import AsyncClient, Client, override_settings

from events.chat.models import ChatMute, ChatNickname
from events.models import Channel, Kind, Message
from events.provisioning import upsert_channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]


@pytest.fixture
def lobby() -> Channel:
    return upsert_channel("lobby", kind=Kind.CHAT, guests_may_post=True)[0]


@pytest.fixture
def members_room() -> Channel:
    return upsert_channel("members-room", kind=Kind.CHAT, guests_may_post=False)[0]


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def moderator() -> User:
    return User.objects.create_user("mod", password="pw", is_staff=True)


async def logged_in(user: User, **options: Any) -> AsyncClient:
    client = AsyncClient(**options)
    await client.aforce_login(user)
    return client


async def post(client: AsyncClient, path: str, body: Any, **headers: str) -> Any:
    return await client.post(path, json.dumps(body), content_type="application/json", headers=headers)


async def say(client: AsyncClient, slug: str, text: Any) -> Any:
    return await post(client, f"/rooms/{slug}/messages", {"text": text})


async def test_a_logged_in_user_posts_a_stored_chat_message(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice)
    response = await say(client, "lobby", "  hello <b>all</b>  ")
    assert response.status_code == 201
    body = response.json()
    assert body["event"] == "chat.message"
    assert body["data"] == {"text": "hello <b>all</b>", "author": {"name": "alice", "guest": False}}
    stored = await Message.objects.aget(channel=lobby, sequence=body["id"])
    assert stored.publisher == "user:alice"


async def test_a_guest_with_a_nickname_posts_where_guests_are_allowed(lobby: Channel) -> None:
    client = AsyncClient()
    refused = await say(client, "lobby", "hi")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Choose a nickname or log in to post in this room."
    named = await post(client, "/rooms/lobby/guest", {"nickname": "Visitor 7"})
    assert named.status_code == 200
    response = await say(client, "lobby", "hi")
    assert response.status_code == 201
    assert response.json()["data"]["author"] == {"name": "Visitor 7", "guest": True}
    assert (await Message.objects.aget(channel=lobby, sequence=response.json()["id"])).publisher == (
        "guest:Visitor 7"
    )


async def test_guests_may_not_post_where_the_room_does_not_take_them(members_room: Channel) -> None:
    client = AsyncClient()
    response = await say(client, "members-room", "hi")
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "detail": "Log in to post in this room; it does not take guests.",
    }
    nickname = await post(client, "/rooms/members-room/guest", {"nickname": "sneaky"})
    assert nickname.status_code == 403
    assert await Message.objects.filter(channel=members_room).acount() == 0


@pytest.mark.parametrize(
    ("nickname", "status"),
    [("ab", 200), ("a", 400), ("x" * 33, 400), ("<script>", 400), ("_under", 400), ("alice", 400)],
)
async def test_nicknames_are_validated(lobby: Channel, alice: User, nickname: str, status: int) -> None:
    response = await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": nickname})
    assert response.status_code == status, response.json()


async def test_a_muted_user_may_not_post(lobby: Channel, alice: User, moderator: User) -> None:
    staff = await logged_in(moderator)
    muted = await post(staff, "/rooms/lobby/mute", {"author": "user:alice", "minutes": 10})
    assert muted.status_code == 201
    client = await logged_in(alice)
    response = await say(client, "lobby", "let me talk")
    assert response.status_code == 403
    assert response.json() == {"error": "muted", "detail": "A moderator has muted you in this room."}
    # The mute is per room.
    await sync_to_async(upsert_channel)("other-room", kind=Kind.CHAT)
    assert (await say(client, "other-room", "elsewhere")).status_code == 201


async def test_an_expired_mute_no_longer_applies(lobby: Channel, alice: User, moderator: User) -> None:
    from django.utils import timezone

    await ChatMute.objects.acreate(channel=lobby, author="user:alice", until=timezone.now(), by=moderator)
    assert (await say(await logged_in(alice), "lobby", "back")).status_code == 201


async def test_only_staff_may_mute_or_delete(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice)
    posted = (await say(client, "lobby", "mine")).json()
    assert (await post(client, "/rooms/lobby/mute", {"author": "user:alice"})).status_code == 403
    deleted = await post(client, f"/rooms/lobby/messages/{posted['id']}/delete", {})
    assert deleted.status_code == 403
    assert (await post(AsyncClient(), "/rooms/lobby/mute", {"author": "user:alice"})).status_code == 401


@override_settings(PUSHSITE={"CHAT_MAX_LENGTH": 10})
async def test_too_long_a_message_is_413(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice)
    assert (await say(client, "lobby", "x" * 10)).status_code == 201
    response = await say(client, "lobby", "x" * 11)
    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": "The message is 11 characters long; the limit is 10.",
    }


async def test_a_room_may_set_its_own_length_limit(lobby: Channel, alice: User) -> None:
    lobby.chat_max_length = 3
    await lobby.asave()
    assert (await say(await logged_in(alice), "lobby", "four")).status_code == 413


@pytest.mark.parametrize("text", ["", "   ", None, 5, ["a"]])
async def test_empty_or_non_text_messages_are_400(lobby: Channel, alice: User, text: Any) -> None:
    response = await say(await logged_in(alice), "lobby", text)
    assert response.status_code == 400


async def test_unknown_fields_and_bad_json_are_400(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice)
    assert (await post(client, "/rooms/lobby/messages", {"text": "a", "html": "b"})).status_code == 400
    bad = await client.post("/rooms/lobby/messages", "{", content_type="application/json")
    assert bad.status_code == 400


@override_settings(PUSHSITE={"CHAT_RATE_MESSAGES": 2, "CHAT_RATE_SECONDS": 60})
async def test_posting_too_fast_is_429_with_retry_after(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice)
    assert [(await say(client, "lobby", f"m{n}")).status_code for n in range(2)] == [201, 201]
    response = await say(client, "lobby", "one too many")
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert response.json()["detail"].startswith("You are sending messages too fast. Try again in ")
    assert 1 <= int(response["Retry-After"]) <= 60
    # Someone else is not affected.
    bob = await sync_to_async(User.objects.create_user)("bob", password="pw")
    assert (await say(await logged_in(bob), "lobby", "hi")).status_code == 201


@override_settings(PUSHSITE={"CHAT_RATE_MESSAGES": 100, "CHAT_IP_RATE_MESSAGES": 3, "CHAT_RATE_SECONDS": 60})
async def test_one_address_is_limited_across_users(lobby: Channel) -> None:
    statuses = []
    for n in range(4):
        client = AsyncClient()
        await post(client, "/rooms/lobby/guest", {"nickname": f"guest {n}"})
        statuses.append((await say(client, "lobby", "hi")).status_code)
    assert statuses == [201, 201, 201, 429]


@override_settings(PUSHSITE={"CHAT_NICKNAME_CLAIMS": 3, "CHAT_NICKNAME_CLAIM_SECONDS": 600})
async def test_one_address_may_not_claim_nicknames_without_limit(lobby: Channel) -> None:
    # Posting is limited per address; claiming a nickname (a session and a name held in
    # the room for PUSHSITE_CHAT_NICKNAME_HOLD_DAYS) was not: one address could hold
    # every name a room's guests might want, and grow two tables without bound.
    statuses = []
    for n in range(5):
        named = await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": f"squat {n}"})
        statuses.append(named.status_code)
    assert statuses == [200, 200, 200, 429, 429]
    assert named.json()["detail"].startswith("Too many nicknames claimed from your network.")
    assert int(named["Retry-After"]) > 0
    held = await ChatNickname.objects.filter(channel=lobby).acount()
    assert held == 3


async def test_posting_without_the_csrf_token_is_refused(lobby: Channel, alice: User) -> None:
    client = await logged_in(alice, enforce_csrf_checks=True)
    response = await say(client, "lobby", "forged")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("CSRF check failed")
    page = await client.get("/rooms/lobby/")
    token = page.cookies["csrftoken"].value
    ok = await post(client, "/rooms/lobby/messages", {"text": "real"}, **{"X-CSRFToken": token})
    assert ok.status_code == 201


async def test_only_chat_rooms_take_chat_posts(alice: User) -> None:
    await sync_to_async(upsert_channel)("news")
    response = await say(await logged_in(alice), "news", "hi")
    assert response.status_code == 404
    assert response.json()["error"] == "channel_not_found"


async def test_reading_follows_the_channel_visibility(alice: User) -> None:
    room = (await sync_to_async(upsert_channel)("secret-room", kind=Kind.CHAT, visibility="private"))[0]
    # Outsiders are refused as for a room that does not exist.
    assert (await say(AsyncClient(), "secret-room", "hi")).status_code == 404
    assert (await say(await logged_in(alice), "secret-room", "hi")).status_code == 404
    await sync_to_async(room.members.add)(alice)
    assert (await say(await logged_in(alice), "secret-room", "hi")).status_code == 201


async def test_staff_deletion_blanks_the_message_and_stores_a_deleted_event(
    lobby: Channel, alice: User, moderator: User
) -> None:
    posted = (await say(await logged_in(alice), "lobby", "rude words")).json()
    response = await post(await logged_in(moderator), f"/rooms/lobby/messages/{posted['id']}/delete", {})
    assert response.status_code == 200
    assert response.json()["event"] == "chat.deleted"
    assert response.json()["data"] == {"id": posted["id"]}
    blanked = await Message.objects.aget(channel=lobby, sequence=posted["id"])
    assert blanked.data == {"text": "", "author": {"name": "alice", "guest": False}, "deleted": True}
    missing = await post(await logged_in(moderator), "/rooms/lobby/messages/999/delete", {})
    assert missing.status_code == 404


async def test_deleting_a_message_again_stores_nothing(lobby: Channel, alice: User, moderator: User) -> None:
    # Each repeat stored another chat.deleted event and sent it to every open page: a
    # moderator (or a stolen staff session) could publish without end, outside any rate.
    posted = (await say(await logged_in(alice), "lobby", "rude words")).json()
    staff = await logged_in(moderator)
    assert (await post(staff, f"/rooms/lobby/messages/{posted['id']}/delete", {})).status_code == 200
    again = await post(staff, f"/rooms/lobby/messages/{posted['id']}/delete", {})
    assert again.status_code == 404
    assert again.json() == {
        "error": "not_found",
        "detail": f"Room 'lobby' has no message {posted['id']}: it was deleted already.",
    }
    assert await Message.objects.filter(channel=lobby, event="chat.deleted").acount() == 1


@override_settings(PUSHSITE={"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 600})
async def test_deletions_count_against_the_moderators_publish_rate(
    lobby: Channel, alice: User, moderator: User
) -> None:
    # A deletion publishes chat.deleted: it counts like the staff user's other publishes
    # (the JSON API, the admin), so switching roads never adds up to more than the rate.
    posted = [(await say(await logged_in(alice), "lobby", f"rude {n}")).json() for n in range(2)]
    staff = await logged_in(moderator)
    published = await post(staff, "/api/channels/lobby/messages", {"data": "notice"})
    assert published.status_code == 201
    assert (await post(staff, f"/rooms/lobby/messages/{posted[0]['id']}/delete", {})).status_code == 200
    refused = await post(staff, f"/rooms/lobby/messages/{posted[1]['id']}/delete", {})
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert refused.headers["Retry-After"]
    kept = await Message.objects.aget(channel=lobby, sequence=posted[1]["id"])
    assert kept.data == {"text": "rude 1", "author": {"name": "alice", "guest": False}}
    assert await Message.objects.filter(channel=lobby, event="chat.deleted").acount() == 1


def test_the_room_page_shows_messages_as_text(lobby: Channel, alice: User) -> None:
    from events.publish.store import store_message
    from events.publish.validate import publishing_reserved

    with publishing_reserved("chat."):
        store_message(
            lobby, {"text": "<img src=x onerror=alert(1)>", "author": {"name": "alice"}}, event="chat.message"
        )
        store_message(
            lobby, {"text": "gone", "author": {"name": "alice"}, "deleted": True}, event="chat.message"
        )
    client = Client()
    page = client.get("/rooms/lobby/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in html
    assert "gone" not in html
    assert 'data-last-id="2"' in html
    assert 'id="guest-form"' in html


def test_a_room_a_visitor_may_not_read_is_not_found_like_a_missing_one() -> None:
    upsert_channel("hidden", kind=Kind.CHAT, visibility="authenticated")
    response = Client().get("/rooms/hidden/")
    assert response.status_code == 404
    assert Client().get("/rooms/no-such-room/").status_code == 404


def test_the_room_list_shows_readable_rooms_only(lobby: Channel) -> None:
    upsert_channel("hidden", kind=Kind.CHAT, visibility="private")
    upsert_channel("news")
    html = Client().get("/rooms/").content.decode()
    assert "/rooms/lobby/" in html
    assert "/rooms/hidden/" not in html
    assert "/rooms/news/" not in html


async def test_typing_is_sent_at_most_every_two_seconds_and_never_stored(
    lobby: Channel, alice: User, moderator: User
) -> None:
    client = await logged_in(alice)
    first = await post(client, "/rooms/lobby/typing", {})
    again = await post(client, "/rooms/lobby/typing", {})
    assert (first.status_code, first.json()) == (200, {"sent": True})
    assert (again.status_code, again.json()) == (200, {"sent": False})
    assert await Message.objects.filter(channel=lobby).acount() == 0
    assert (await post(AsyncClient(), "/rooms/lobby/typing", {})).status_code == 401
    await cache.aclear()
    await post(await logged_in(moderator), "/rooms/lobby/mute", {"author": "user:alice"})
    assert (await post(client, "/rooms/lobby/typing", {})).json() == {"sent": False}


def test_seed_demo_and_create_channel_make_chat_rooms() -> None:
    from io import StringIO

    from django.core.management import call_command

    call_command("seed_demo", stdout=StringIO())
    lobby = Channel.objects.get(slug="lobby")
    assert (lobby.kind, lobby.guests_may_post) == (Kind.CHAT, True)
    out = StringIO()
    call_command("create_channel", "staff-talk", "--kind", "chat", "--no-guests-may-post", stdout=out)
    assert out.getvalue() == "Created channel staff-talk (public). It is a chat room.\n"
    assert Channel.objects.get(slug="staff-talk").guests_may_post is False


async def test_a_feed_is_no_chat_room_and_the_refusal_says_so(alice: User) -> None:
    await sync_to_async(upsert_channel)("feed-not-room")
    await sync_to_async(upsert_channel)("hidden-feed", visibility="private")
    client = await logged_in(alice)
    response = await say(client, "feed-not-room", "hi")
    assert response.status_code == 404
    assert response.json() == {
        "error": "channel_not_found",
        "detail": "'feed-not-room' is a feed channel, not a chat room: read it at /channels/feed-not-room/ "
        "and publish with POST /api/channels/feed-not-room/messages.",
    }
    # A channel the reader may not read still reads as missing (docs/security.md).
    hidden = await say(client, "hidden-feed", "hi")
    assert hidden.json()["detail"] == "No active channel is called 'hidden-feed'."
