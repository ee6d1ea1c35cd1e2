"""One client address for every endpoint: the stream cap, the chat limit, the logs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from events.deliver.relay import get_relay
from events.http.address import client_address
from events.models import Channel
from tests.support.asgi import CLIENT, subscribe_refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]


# --- the client's address ------------------------------------------------------------------------


def test_the_client_address_is_the_same_for_a_request_and_a_scope() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="198.51.100.4")
    assert client_address(request) == "198.51.100.4"
    assert client_address({"client": ("198.51.100.4", 5555)}) == "198.51.100.4"
    assert client_address({"client": None}) == "-"
    assert client_address(RequestFactory().get("/", REMOTE_ADDR="")) == "-"


async def test_the_per_address_stream_cap_counts_the_scopes_client(settings: Any, news: Channel) -> None:
    settings.PUSHSITE = {"MAX_STREAMS_PER_IP": 2}
    relay = get_relay()
    relay.streams_per_ip[CLIENT[0]] = 2
    try:
        answer = await subscribe_refused()
    finally:
        del relay.streams_per_ip[CLIENT[0]]
    assert answer.status == 429
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "already holds 2 open streams on this server" in answer.json()["detail"]


async def test_a_cap_of_one_stream_is_said_in_the_singular(settings: Any, news: Channel) -> None:
    settings.PUSHSITE = {"MAX_STREAMS_PER_IP": 1}
    relay = get_relay()
    relay.streams_per_ip[CLIENT[0]] = 1
    try:
        answer = await subscribe_refused()
    finally:
        del relay.streams_per_ip[CLIENT[0]]
    assert answer.status == 429
    assert "already holds 1 open stream on this server;" in answer.json()["detail"]


def test_the_chat_per_address_limit_counts_the_requests_address(settings: Any, room: Channel) -> None:
    settings.PUSHSITE = {"CHAT_IP_RATE_MESSAGES": 1, "CHAT_RATE_SECONDS": 3600}
    answers = []
    for number, address in enumerate(["192.0.2.1", "192.0.2.1", "192.0.2.2"]):
        client = Client(REMOTE_ADDR=address)
        client.force_login(User.objects.create_user(f"user{number}", password="pw"))
        response = client.post("/rooms/room/messages", '{"text": "hi"}', content_type="application/json")
        answers.append(response.status_code)
    # Three people: the second shares the first one's address and its limit.
    assert answers == [201, 429, 201]
