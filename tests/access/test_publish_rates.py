"""Publish rates hold for every way of publishing, through events/access/ratelimit.py."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient

from events.access import ratelimit
from events.models import Channel
from events.provisioning import create_api_key, upsert_channel
from tests.support.asgi import stream_publish
from tests.support.fixtures import messages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]


# --- publish rates: every way of publishing counts against the key -------------------------


async def test_a_key_over_its_rate_gets_429_from_the_streaming_publish_before_anything_is_stored(
    settings: Any, news: Channel, key: str
) -> None:
    settings.PUSHSITE = {"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 3600}
    for number in range(2):
        response = await AsyncClient().post(
            "/api/channels/news/messages",
            json.dumps({"data": number}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 201
    before = await messages()
    answer = await stream_publish("news", [b'{"data": "late"}\n'], authorization=f"Bearer {key}")
    assert answer.status == 429
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["detail"].startswith("This API key is publishing too fast.")
    assert "stream" not in answer.json()  # it never started: no end event either
    assert await messages() == before


async def test_a_key_refused_on_a_channel_spends_none_of_its_rate(settings: Any, news: Channel) -> None:
    # Django's view (AsyncClient goes straight to it) counted the publish before it
    # checked the key's channels; the API-key fast path checks first. Now both do.
    settings.PUSHSITE = {"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 3600}
    await sync_to_async(upsert_channel)("elsewhere")
    secret = (await sync_to_async(create_api_key)("narrow", ["elsewhere"]))[1]
    for _ in range(3):
        refused = await AsyncClient().post(
            "/api/channels/news/messages",
            '{"data": 1}',
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert refused.status_code == 403, refused.content
    for number in range(2):
        stored = await AsyncClient().post(
            "/api/channels/elsewhere/messages",
            json.dumps({"data": number}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert stored.status_code == 201, stored.content


async def test_each_streamed_part_counts_as_one_publish(settings: Any, news: Channel, key: str) -> None:
    settings.PUSHSITE = {"PUBLISH_RATE_MESSAGES": 3, "PUBLISH_RATE_SECONDS": 3600}
    lines = b"".join(b'{"data": %d}\n' % number for number in range(5))
    answer = await stream_publish("news", [lines], authorization=f"Bearer {key}")
    assert answer.status == 429
    assert answer.json()["parts"] == 3
    stored = await messages()
    assert [data.get("data") for _, data in stored[:3]] == [0, 1, 2]
    assert stored[3][0] == "pushsite.stream.end"
    assert stored[3][1]["status"] == "failed"
    assert stored[3][1]["reason"].startswith("This API key is publishing too fast.")
    assert len(stored) == 4
    # The JSON API shares the count.
    response = await AsyncClient().post(
        "/api/channels/news/messages",
        '{"data": 9}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 429


async def test_chat_posts_are_counted_by_the_shared_rate_limiter(
    settings: Any, room: Channel, alice: User
) -> None:
    settings.PUSHSITE = {"CHAT_RATE_MESSAGES": 1, "CHAT_RATE_SECONDS": 3600}
    client = AsyncClient()
    await client.aforce_login(alice)
    with mock.patch.object(ratelimit, "hit", wraps=ratelimit.hit) as hit:
        first = await client.post("/rooms/room/messages", '{"text": "one"}', content_type="application/json")
        second = await client.post("/rooms/room/messages", '{"text": "two"}', content_type="application/json")
    assert first.status_code == 201
    assert second.status_code == 429
    assert int(second["Retry-After"]) >= 1
    assert {call.args[0] for call in hit.call_args_list} == {"chat-author", "chat-ip"}
