"""One error reply for every endpoint family: the JSON API, chat, the streaming publish and the stream."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import AsyncClient

from events.exceptions import MethodNotAllowed, RateLimited, ServiceUnavailable
from events.http.responses import from_exception, send_error
from events.models import Channel
from events.publish.stream_publication import StreamPublication
from pushsite.asgi import application
from tests.support.asgi import django_answer, stream_publish, subscribe_refused
from tests.support.fixtures import messages

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]


# --- one error shape, the same bytes from views and ASGI consumers ----------------------


async def test_405_has_the_same_shape_and_an_allow_header_everywhere(news: Channel, room: Channel) -> None:
    answers = {
        "messages": django_answer(await AsyncClient().put("/api/channels/news/messages")),
        "tokens": django_answer(await AsyncClient().get("/api/tokens")),
        "chat": django_answer(await AsyncClient().get("/rooms/room/messages")),
        "stream publish": await stream_publish("news", [b""], authorization=None, method="GET"),
        "subscribe": await subscribe_refused("POST"),
        # The read-only endpoints outside /api/ answered another method with Django's HTML
        # CSRF page (403, "CSRF verification failed") and an OPTIONS with a full health check.
        "healthz": django_answer(await AsyncClient().put("/healthz")),
        "healthz options": django_answer(await AsyncClient().options("/healthz")),
        "metrics": django_answer(await AsyncClient().delete("/metrics")),
        "openapi": django_answer(await AsyncClient().post("/api/openapi.json")),
        # ... and the demo's POST endpoint a GET with Django's empty text/html 405.
        "demo ask": django_answer(await AsyncClient().get("/demo/streamed/ask")),
    }
    allowed = {
        "messages": "GET, HEAD, POST",
        "tokens": "POST",
        "chat": "POST",
        "stream publish": "POST",
        "subscribe": "GET, HEAD, OPTIONS",
        "healthz": "GET, HEAD",
        "healthz options": "GET, HEAD",
        "metrics": "GET, HEAD",
        "openapi": "GET, HEAD",
        "demo ask": "POST",
    }
    for family, answer in answers.items():
        assert answer.status == 405, family
        assert answer.headers["allow"] == allowed[family], family
        assert answer.headers["content-type"] == "application/json", family
        assert answer.headers["cache-control"] == "no-store", family
        body = answer.json()
        assert list(body) == ["error", "detail"], family
        assert body["error"] == "method_not_allowed"
        assert body["detail"].endswith(".")


@pytest.mark.parametrize(
    "error",
    [
        MethodNotAllowed("PUT is not allowed here; use POST.", allow="POST"),
        ServiceUnavailable("The database is not available; try again shortly."),
        RateLimited("Slow down. Try again in 7 s.", retry_after=7),
    ],
    ids=["405", "503", "429"],
)
async def test_a_view_and_a_consumer_send_the_same_bytes_for_an_error(error: Any) -> None:
    view = django_answer(from_exception(error))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await send_error(send, error)
    start, body = sent
    assert start["status"] == view.status
    consumer_headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert consumer_headers.pop("content-length") == str(len(view.body))
    assert consumer_headers == view.headers
    assert body["body"] == view.body
    if view.status != 405:
        assert int(view.headers["retry-after"]) == error.retry_after


async def test_a_database_outage_is_503_with_retry_after_in_every_family(
    news: Channel, key: str, alice: User
) -> None:
    outage = OperationalError("the database went away")
    bearer = {"Authorization": f"Bearer {key}"}
    chat = AsyncClient()
    await chat.aforce_login(alice)
    with (
        mock.patch("events.access.auth.active_channels", side_effect=outage),
        mock.patch("events.publish.api.active_channels", side_effect=outage),
        mock.patch("events.publish.api.readable_channels", side_effect=outage),
        mock.patch("events.deliver.consumer.readable_channels", side_effect=outage),
        mock.patch("events.chat.rules.get_room", side_effect=outage),
    ):
        answers = {
            "publish": django_answer(
                await AsyncClient().post(
                    "/api/channels/news/messages",
                    '{"data": 1}',
                    content_type="application/json",
                    headers=bearer,
                )
            ),
            "history": django_answer(await AsyncClient().get("/api/channels/news/messages")),
            "tokens": django_answer(
                await AsyncClient().post(
                    "/api/tokens", '{"channels": ["news"]}', content_type="application/json", headers=bearer
                )
            ),
            "chat": django_answer(
                await chat.post("/rooms/room/messages", '{"text": "hi"}', content_type="application/json")
            ),
            "stream publish": await stream_publish(
                "news", [b'{"data": 1}\n'], authorization=bearer["Authorization"]
            ),
            "subscribe": await subscribe_refused(),
        }
    for family, answer in answers.items():
        assert answer.status == 503, (family, answer.body)
        assert answer.headers["retry-after"] == "5", family
        assert answer.headers["content-type"] == "application/json", family
        assert answer.json()["error"] == "unavailable", family
    assert await messages() == []


async def test_a_failure_inside_the_streaming_publish_still_ends_the_stream_failed(
    news: Channel, key: str
) -> None:
    bug = RuntimeError("a bug")
    with mock.patch.object(StreamPublication, "aqueue", side_effect=bug):
        answer = await stream_publish("news", [b'{"data": 1}\n'], authorization=f"Bearer {key}")
    assert answer.status == 500
    assert answer.json()["error"] == "internal"
    assert answer.json()["status"] == "failed"
    stored = await messages()
    assert [event for event, _ in stored] == ["pushsite.stream.end"]
    assert stored[0][1]["status"] == "failed"


# --- Django's own 400s (too many fields, ...) in the same shape as the stream path's ------


@pytest.mark.parametrize("path", ["/api/channels/news/messages", "/embed/news/"])
async def test_too_many_query_fields_is_the_json_400(news: Channel, room: Channel, path: str) -> None:
    # The stream path answered 5,000 query fields with its JSON 400; the history API (and
    # every view that reads its query, the embed page too) with Django's empty HTML page.
    query = "&".join(["limit=1"] * 1001)
    answer = django_answer(await AsyncClient().get(f"{path}?{query}"))
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "invalid",
        "detail": "The request has more than 1000 query or form fields.",
    }


# --- A WebSocket upgrade: a clean refusal, not a 500 and a traceback per request ---------


@pytest.mark.parametrize("path", ["/events/news/", "/api/channels/news/messages", "/"])
@pytest.mark.parametrize("extensions", [{}, {"websocket.http.response": {}}], ids=["plain", "http-response"])
async def test_a_websocket_upgrade_is_refused_before_the_handshake(
    path: str, extensions: dict[str, Any]
) -> None:
    # Any request with Upgrade: websocket reached Channels' router, which has no
    # websocket route: uvicorn answered 500 and logged a traceback for each one.
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "subprotocols": [],
        "extensions": extensions,
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1008}
    await communicator.wait(timeout=5)
