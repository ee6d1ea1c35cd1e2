"""The JSON publish URL routed before Channels, and its 201 written whole (issue 17).

The route must take exactly the paths Channels' router took for it; the 201 must be
the bytes Django's ``JsonResponse`` and the header layer made of it, on both write
paths (the protocol writing the whole response under ``manage.py serve``, plain ASGI
``send`` under ``--portable``), keep-alive and pipelined requests included.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.http import JsonResponse
from django.urls.resolvers import RoutePattern
from django.utils.cache import patch_vary_headers

from events.publish.api import created_body
from events.routing import publish_route
from pushsite.headers import add_security_headers
from tests.support.asgi import http_scope
from tests.support.servers import ServerProcess
from tests.support.write_paths import server_on_each_write_path  # noqa: F401  (the `server` fixture)

# What Channels' URLRouter matched the publish URL with (an endpoint: the whole path).
CHANNELS_PATTERN = RoutePattern("api/channels/<slug:slug>/messages", is_endpoint=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/channels/news/messages",
        "/api/channels/a-b_9/messages",
        "/api/channels/messages",
        "/api/channels//messages",
        "/api/channels/news/messages/",
        "/api/channels/news/stream",
        "/api/channels/a.b/messages",
        "/api/channels/news/more/messages",
        "/api/channels/news/messagesx",
        "/api/channels/ne%20ws/messages",
        "/api/channels/n\u00e9ws/messages",
        "/api/channels/news\n/messages",
        "/api/tokens",
        "/events/news/",
        "/",
    ],
)
def test_publish_route_takes_exactly_what_channels_router_took(path: str) -> None:
    match = CHANNELS_PATTERN.match(path.lstrip("/"))
    expected = None if match is None else {"args": (), "kwargs": match[2]}
    assert publish_route(path) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {
            "id": 1,
            "channel": "news",
            "event": "message",
            "data": None,
            "published_at": "2026-01-01T00:00:00.000Z",
        },
        {
            "id": 12345678901,
            "channel": "a-b_9",
            "event": "x.y:z-1",
            "data": {
                "s": 'caf\u00e9 \u2028 \U0001f600 "q" \\ \n',
                "f": [1.5, -0.0, 1e300, 3],
                "b": [True, False],
            },
            "published_at": "2026-01-01T00:00:00.123Z",
        },
        {"id": 2, "channel": "c", "event": "e", "data": [[], {}, "", 0], "published_at": "t"},
    ],
)
def test_the_created_body_is_what_json_response_held(payload: dict[str, Any]) -> None:
    assert created_body(payload) == JsonResponse(payload, status=201).content


async def raw_exchange(server: ServerProcess, requests: list[bytes], answers: int) -> list[bytes]:
    """Send ``requests`` in one write on one connection; the raw responses (each whole)."""
    address = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        responses = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
            responses.append(head + await asyncio.wait_for(reader.readexactly(length), 10))
        return responses
    finally:
        writer.close()


def publish_request(server: ServerProcess, slug: str, key: str, data: Any, *extra: str) -> bytes:
    body = json.dumps({"event": "notice", "data": data}).encode()
    host = urlsplit(server.url).netloc
    lines = [
        f"POST /api/channels/{slug}/messages HTTP/1.1",
        f"Host: {host}",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def as_before(response: bytes) -> bytes:
    """The response the fast path wrote before issue 17 for this body and Location.

    Django's JsonResponse of the body, its Location, CorsMiddleware's Vary, the
    Content-Length, the header layer's security headers, after uvicorn's own two.
    """
    head, body = response.split(b"\r\n\r\n", 1)
    location = re.search(rb"(?im)^location: ([^\r\n]*)", head)[1].decode()  # type: ignore[index]
    django = JsonResponse(json.loads(body), status=201)
    django["Location"] = location
    patch_vary_headers(django, ("origin",))
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in django.items()]
    headers.append((b"content-length", str(len(django.content)).encode()))
    start = add_security_headers(
        {"type": "http.response.start", "headers": headers},
        http_scope("POST", "/", {}),  # type: ignore[arg-type]
    )
    date = re.search(rb"(?im)^date: [^\r\n]*", head)[0]  # type: ignore[index]
    lines = [b"HTTP/1.1 201 Created", date, b"server: uvicorn"]
    lines += [b"%s: %s" % (name.lower(), value) for name, value in start["headers"]]
    return b"\r\n".join(lines) + b"\r\n\r\n" + django.content


async def test_the_201_is_the_same_bytes_as_before_on_each_write_path(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    data = {"text": 'caf\u00e9 \u2028 "q"', "n": [1.5, 2, None, True]}
    (created,) = await raw_exchange(server, [publish_request(server, channel, api_key, data)], answers=1)
    assert created.startswith(b"HTTP/1.1 201 Created\r\n")
    assert json.loads(created.split(b"\r\n\r\n", 1)[1])["data"] == data
    assert created == as_before(created)


async def test_pipelined_and_kept_alive_publishes_are_each_answered_in_order(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    responses = await raw_exchange(
        server, [publish_request(server, channel, api_key, {"n": n}) for n in range(5)], answers=5
    )
    bodies = [json.loads(response.split(b"\r\n\r\n", 1)[1]) for response in responses]
    assert [body["data"] for body in bodies] == [{"n": n} for n in range(5)]
    ids = [body["id"] for body in bodies]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert all(response.startswith(b"HTTP/1.1 201 Created\r\n") for response in responses)
    assert all(b"connection: close" not in response.lower() for response in responses)
