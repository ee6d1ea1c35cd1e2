"""The stream endpoint's routing and response head (events/routing.py, events/deliver/endpoint.py)."""

from __future__ import annotations

import httpx
import pytest

from events.deliver.endpoint import stream_head
from events.routing import stream_route
from pushsite.headers import complete_head, security_headers
from pushsite.security import CONTENT_SECURITY_POLICY
from tests.support.asgi import http_scope
from tests.support.servers import ServerProcess
from tests.support.sse_client import Subscriber

EVENT_STREAM = "text/event-stream"


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/events/", {"args": (), "kwargs": {}}),
        ("/events/news/", {"args": (), "kwargs": {"slug": "news"}}),
        ("/events/a-b_9/", {"args": (), "kwargs": {"slug": "a-b_9"}}),
        ("/events/news", None),  # Django's APPEND_SLASH answers it
        ("/events/news/more/", None),
        ("/events/a.b/", None),  # not a slug: Django's 404
        ("/events//", None),
        ("/events", None),
        ("/eventsx/news/", None),
        ("/api/channels/news/messages", None),
        ("/", None),
    ],
)
def test_stream_route_matches_exactly_the_stream_urls(path: str, route: object) -> None:
    assert stream_route(path) == route


def test_a_stream_head_is_built_once_per_shape() -> None:
    scope = http_scope("GET", "/events/news/", {})
    own = stream_head(EVENT_STREAM, None)
    head = complete_head(scope, own)  # type: ignore[arg-type]
    assert stream_head(EVENT_STREAM, None) is own
    assert complete_head(scope, stream_head(EVENT_STREAM, None)) is head  # type: ignore[arg-type]
    names = [name.lower() for name, _value in head]
    assert len(names) == len(set(names))  # nosniff is the stream's own: not added twice
    assert {name.lower(): value for name, value in head}[b"content-security-policy"] == (
        CONTENT_SECURITY_POLICY.encode()
    )
    assert set(security_headers(False)) - set(head) == {(b"X-Content-Type-Options", b"nosniff")}
    crossed = complete_head(scope, stream_head(EVENT_STREAM, "https://site.example"))  # type: ignore[arg-type]
    assert dict(crossed)[b"access-control-allow-origin"] == b"https://site.example"


async def test_the_head_is_the_same_on_each_write_path(server: ServerProcess) -> None:
    """Written by the protocol with the first frame (direct) or sent through ASGI (portable): one head."""
    origin = "http://partner.example:8080"
    async with Subscriber(f"{server.url}/events/partner-feed/", headers={"Origin": origin}) as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        assert subscriber.response is not None
        headers = subscriber.response.headers
    assert headers["content-type"] == EVENT_STREAM
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["vary"] == "Origin, Accept"
    assert headers["access-control-allow-origin"] == origin
    assert headers["transfer-encoding"] == "chunked"
    assert headers.get_list("x-content-type-options") == ["nosniff"]
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["x-frame-options"] == "DENY"


async def test_a_refusal_has_the_security_headers_too(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as client:
        refused = await client.get(f"{server.url}/events/no-such-channel/")
        preflight = await client.options(
            f"{server.url}/events/partner-feed/",
            headers={"Origin": "http://partner.example:8080", "Access-Control-Request-Method": "GET"},
        )
    assert refused.status_code == 404
    assert refused.json()["error"] == "channel_not_found"
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://partner.example:8080"
    for response in (refused, preflight):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]


@pytest.mark.parametrize(
    ("query", "content_type"), [("", EVENT_STREAM), ("?format=ndjson", "application/x-ndjson")]
)
async def test_head_answers_what_a_get_would_and_holds_no_stream(
    server: ServerProcess, query: str, content_type: str
) -> None:
    # A HEAD response has no body: the stream behind it held an address slot and a feed
    # until the client left (a monitor's HEAD probe never answered at all).
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(3):
            response = await client.head(f"{server.url}/events/partner-feed/{query}")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(content_type)
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.content == b""
        refused = await client.head(f"{server.url}/events/no-such-channel/")
        assert refused.status_code == 404
