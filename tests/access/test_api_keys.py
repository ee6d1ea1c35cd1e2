"""API keys: one Bearer parser for every endpoint family; another Authorization scheme is no credential."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient

from events.deliver.endpoint import EventStreamEndpoint
from events.models import Channel
from tests.support.asgi import django_answer, http_scope, stream_publish, subscribe_refused
from tests.support.fixtures import messages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]

BASIC = "Basic dXNlcjpwYXNzd29yZA=="  # what a password-protected proxy in front of the site sends


# --- API keys: one bearer parser; other schemes are not credentials --------------------


async def test_basic_authorization_is_ignored_on_public_reads(news: Channel) -> None:
    history = await AsyncClient().get("/api/channels/news/messages", headers={"Authorization": BASIC})
    assert history.status_code == 200, history.content
    scope = http_scope(
        "GET", "/events/news/", {"authorization": BASIC}, url_route={"args": (), "kwargs": {"slug": "news"}}
    )
    communicator = ApplicationCommunicator(EventStreamEndpoint(), scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=10)
    assert start["status"] == 200
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)


async def test_basic_authorization_is_not_a_credential_for_publishing_or_minting(
    news: Channel, alice: User
) -> None:
    publish = await AsyncClient().post(
        "/api/channels/news/messages",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": BASIC},
    )
    tokens = await AsyncClient().post(
        "/api/tokens",
        '{"channels": ["news"]}',
        content_type="application/json",
        headers={"Authorization": BASIC},
    )
    streamed = await stream_publish("news", [b'{"data": 1}\n'], authorization=BASIC)
    for answer in (django_answer(publish), django_answer(tokens), streamed):
        assert answer.status == 401, answer.body
        assert "Authorization: Bearer <api key>" in answer.json()["detail"]
    assert await messages() == []


@pytest.mark.parametrize("authorization", ["Bearer psk_00000000_wrong", "Bearer", "bearer  "])
async def test_a_wrong_bearer_key_is_refused_by_every_family(news: Channel, authorization: str) -> None:
    history = await AsyncClient().get("/api/channels/news/messages", headers={"Authorization": authorization})
    publish = await AsyncClient().post(
        "/api/channels/news/messages",
        '{"data": 1}',
        content_type="application/json",
        headers={"Authorization": authorization},
    )
    tokens = await AsyncClient().post(
        "/api/tokens",
        '{"channels": ["news"]}',
        content_type="application/json",
        headers={"Authorization": authorization},
    )
    streamed = await stream_publish("news", [b'{"data": 1}\n'], authorization=authorization)
    subscribed = await subscribe_refused(headers={"authorization": authorization})
    for answer in (
        django_answer(history),
        django_answer(publish),
        django_answer(tokens),
        streamed,
        subscribed,
    ):
        assert answer.status == 401, answer.body
        assert answer.json() == {
            "error": "unauthorized",
            "detail": "The API key is not valid, or it has been revoked.",
        }
    assert await messages() == []
