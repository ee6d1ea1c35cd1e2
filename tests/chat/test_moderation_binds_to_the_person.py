"""Chat moderation binds to the person, not the label (issue 13)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import AsyncClient, override_settings
from django.utils import timezone

from events.chat.models import ChatMute, ChatNickname
from events.chat.nicknames import release_idle
from events.models import Channel, Kind
from events.provisioning import upsert_channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]


@pytest.fixture
def lobby() -> Channel:
    return upsert_channel("lobby", kind=Kind.CHAT, guests_may_post=True)[0]


@pytest.fixture
def moderator() -> User:
    return User.objects.create_user("mod", password="pw", is_staff=True)


async def post(client: AsyncClient, path: str, body: Any) -> Any:
    return await client.post(path, json.dumps(body), content_type="application/json")


async def guest(nickname: str, client: AsyncClient | None = None) -> AsyncClient:
    client = client or AsyncClient()
    response = await post(client, "/rooms/lobby/guest", {"nickname": nickname})
    assert response.status_code == 200, response.json()
    return client


async def mute(moderator: User, author: str) -> Any:
    staff = AsyncClient()
    await staff.aforce_login(moderator)
    return await post(staff, "/rooms/lobby/mute", {"author": author, "minutes": 60})


async def test_a_muted_guest_stays_muted_under_a_new_nickname(lobby: Channel, moderator: User) -> None:
    troll = await guest("troll")
    assert (await post(troll, "/rooms/lobby/messages", {"text": "spam"})).status_code == 201
    assert (await mute(moderator, "guest:troll")).status_code == 201

    await guest("nice person", troll)
    refused = await post(troll, "/rooms/lobby/messages", {"text": "it's me again"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "muted"
    # Another guest is not caught by the mute.
    other = await guest("someone else")
    assert (await post(other, "/rooms/lobby/messages", {"text": "hello"})).status_code == 201


async def test_a_muted_user_stays_muted_after_a_rename(lobby: Channel, moderator: User) -> None:
    alice = await User.objects.acreate(username="alice")
    assert (await mute(moderator, "user:alice")).status_code == 201
    alice.username = "alice2"
    await alice.asave()
    client = AsyncClient()
    await client.aforce_login(alice)
    refused = await post(client, "/rooms/lobby/messages", {"text": "new name, same me"})
    assert refused.status_code == 403


async def test_a_guest_cannot_take_a_nickname_in_use_in_the_room(lobby: Channel) -> None:
    first = await guest("Bob")
    await post(first, "/rooms/lobby/messages", {"text": "hi"})
    for taken in ("Bob", "bob", "BOB"):
        response = await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": taken})
        assert response.status_code == 400
        assert "in use in this room" in response.json()["detail"]
    # Moving to another name keeps the old one: an old message's name never passes on.
    await guest("Robert", first)
    assert (await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": "bob"})).status_code == 400
    # The same guest may go back to it.
    await guest("Bob", first)


async def test_a_guest_cannot_take_a_users_name(lobby: Channel) -> None:
    await User.objects.acreate(username="carol")
    response = await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": "Carol"})
    assert response.status_code == 400


async def test_a_nickname_chosen_elsewhere_is_checked_in_each_room(lobby: Channel) -> None:
    await upsert_channel_async("hall")
    in_hall = AsyncClient()
    assert (await post(in_hall, "/rooms/hall/guest", {"nickname": "dave"})).status_code == 200
    await guest("dave")  # another guest holds "dave" in the lobby
    refused = await post(in_hall, "/rooms/lobby/messages", {"text": "hi"})
    assert refused.status_code == 400
    assert "in use in this room" in refused.json()["detail"]


async def test_muting_somebody_who_never_took_part_is_400(lobby: Channel, moderator: User) -> None:
    assert (await mute(moderator, "guest:nobody")).status_code == 400
    assert not await ChatMute.objects.aexists()


async def upsert_channel_async(slug: str) -> None:
    await sync_to_async(upsert_channel)(slug, kind=Kind.CHAT, guests_may_post=True)


def test_upgrade_binds_existing_user_mutes_to_the_user() -> None:
    call_command("migrate", "chat", "0001", verbosity=0)
    room = upsert_channel("lobby-before", kind=Kind.CHAT)[0]
    erin = User.objects.create_user("erin")
    with connection.cursor() as cursor:
        for author in ("user:erin", "guest:troll"):
            cursor.execute(
                "INSERT INTO events_chatmute (channel_id, author, created_at) VALUES (%s, %s, %s)",
                [room.pk, author, timezone.now()],
            )
    call_command("migrate", verbosity=0)
    assert dict(ChatMute.objects.values_list("author", "person")) == {
        "user:erin": f"user:{erin.pk}",
        "guest:troll": "",
    }


async def test_staff_see_held_nicknames_in_the_admin(lobby: Channel, moderator: User) -> None:
    await guest("Frank")
    staff = AsyncClient()
    await staff.aforce_login(await User.objects.acreate(username="root", is_staff=True, is_superuser=True))
    page = await staff.get("/admin/chat/chatnickname/")
    assert page.status_code == 200
    assert "Frank" in page.content.decode()


async def test_a_nickname_long_out_of_use_is_released_once_no_kept_message_carries_it(lobby: Channel) -> None:
    first = await guest("Zed")
    assert (await post(first, "/rooms/lobby/messages", {"text": "hi"})).status_code == 201
    await guest("Quiet")  # claimed, never posted
    long_ago = timezone.now() - timedelta(days=31)
    await ChatNickname.objects.aupdate(last_used_at=long_ago)

    with override_settings(PUSHSITE={"CHAT_NICKNAME_HOLD_DAYS": 30}):
        released = await sync_to_async(release_idle)()
    # "Zed" is still on a kept message, so it stays with its guest; "Quiet" is free.
    assert released == 1
    assert [name async for name in ChatNickname.objects.values_list("name", flat=True)] == ["Zed"]
    assert (await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": "quiet"})).status_code == 200
    assert (await post(AsyncClient(), "/rooms/lobby/guest", {"nickname": "zed"})).status_code == 400

    # Once the room no longer keeps Zed's message, the name is released too.
    await sync_to_async(lambda: lobby.messages.all().delete())()
    with override_settings(PUSHSITE={"CHAT_NICKNAME_HOLD_DAYS": 30}):
        assert await sync_to_async(release_idle)() == 1


async def test_posting_keeps_a_nickname_in_use(lobby: Channel) -> None:
    first = await guest("Busy")
    await ChatNickname.objects.aupdate(last_used_at=timezone.now() - timedelta(days=31))
    assert (await post(first, "/rooms/lobby/messages", {"text": "still here"})).status_code == 201
    claim = await ChatNickname.objects.aget(name="Busy")
    assert timezone.now() - claim.last_used_at < timedelta(minutes=1)
    await sync_to_async(lambda: lobby.messages.all().delete())()
    assert await sync_to_async(release_idle)() == 0


async def test_switching_nicknames_does_not_reset_the_typing_limit(lobby: Channel) -> None:
    typist = await guest("Typist")
    assert (await post(typist, "/rooms/lobby/typing", {})).json() == {"sent": True}
    await guest("Another name", typist)
    assert (await post(typist, "/rooms/lobby/typing", {})).json() == {"sent": False}
    # Someone else is not held back by it.
    assert (await post(await guest("Other"), "/rooms/lobby/typing", {})).json() == {"sent": True}
