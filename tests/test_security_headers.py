"""Every family of response carries the same security headers, whichever road it took.

Real server processes: the header layer (pushsite/headers.py) wraps the ASGI
application, so only a request through ``pushsite.asgi:application`` sees it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pushsite.security import CONTENT_SECURITY_POLICY
from tests.conftest import SERVER_SETTINGS
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber

# Written out, not derived: a change to what the layer computes must show here.
EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "x-frame-options": "DENY",
    "content-security-policy": CONTENT_SECURITY_POLICY,
}
HSTS = "max-age=31536000; includeSubDomains; preload"
SECURITY_HEADERS = {*EXPECTED, "strict-transport-security"}


def security(headers: httpx.Headers) -> dict[str, str]:
    """The security headers of a response, each exactly once."""
    found = {name: headers.get_list(name) for name in SECURITY_HEADERS if name in headers}
    assert all(len(values) == 1 for values in found.values()), found
    return {name: values[0] for name, values in found.items()}


def publish(url: str, key: str, slug: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/channels/{slug}/messages",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )


def families(url: str, key: str, channel: str, **extra: str) -> dict[str, httpx.Response]:
    """One response of each kind the site serves, by the road it takes."""
    valid = b'{"event": "notice", "data": {"n": 1}}'
    return {
        "fast path 201": publish(url, key, channel, valid, **extra),
        "fast path 400": publish(url, key, channel, b"{not json", **extra),
        "fast path 401": publish(url, "psk_00000000_wrong", channel, valid, **extra),
        "fast path 404": publish(url, key, "no-such-channel", valid, **extra),
        "django publish 201": publish(url, key, channel, valid, Cookie="theme=dark", **extra),
        "django page": httpx.get(f"{url}/", headers=extra),
        "django history": httpx.get(f"{url}/api/channels/{channel}/messages", headers=extra),
        "static file": httpx.get(f"{url}/static/events/channel.js", headers=extra),
        "streaming publish 405": httpx.get(f"{url}/api/channels/{channel}/stream", headers=extra),
        "stream 404": httpx.get(f"{url}/events/no-such-channel/", headers=extra),
    }


def test_every_response_family_has_the_security_headers(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    responses = families(server.url, api_key, channel)
    statuses = {family: response.status_code for family, response in responses.items()}
    assert statuses == {
        "fast path 201": 201,
        "fast path 400": 400,
        "fast path 401": 401,
        "fast path 404": 404,
        "django publish 201": 201,
        "django page": 200,
        "django history": 200,
        "static file": 200,
        "streaming publish 405": 405,
        "stream 404": 404,
    }
    assert {family: security(response.headers) for family, response in responses.items()} == {
        family: EXPECTED for family in responses
    }


async def test_an_open_stream_has_the_security_headers(server: ServerProcess, channel: str) -> None:
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        headers = subscriber.response.headers  # type: ignore[union-attr]
        assert headers["content-type"] == "text/event-stream"
        assert security(headers) == EXPECTED


def test_a_response_with_its_own_policy_decides_its_framing(server: ServerProcess) -> None:
    # The iframe embed sets frame-ancestors from the channel's allowed origins.
    response = httpx.get(f"{server.url}/embed/partner-feed/")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].endswith("frame-ancestors http://partner.example:8080")
    assert "x-frame-options" not in response.headers
    assert security(response.headers) == {
        **{name: value for name, value in EXPECTED.items() if name != "x-frame-options"},
        "content-security-policy": response.headers["content-security-policy"],
    }


@pytest.fixture(scope="module")
def https_server(site: Site) -> Iterator[ServerProcess]:
    """A second process on the same database, configured as served over TLS behind a proxy."""
    behind_tls = Site(
        workdir=site.workdir,
        database_url=site.database_url,
        settings=dict(SERVER_SETTINGS),
        extra_env={"DJANGO_HTTPS": "1"},
    )
    process = ServerProcess(behind_tls, name="https").start()
    yield process
    process.stop()


def test_requests_over_tls_get_hsts_on_every_family(
    https_server: ServerProcess, api_key: str, channel: str
) -> None:
    responses = families(https_server.url, api_key, channel, **{"X-Forwarded-Proto": "https"})
    assert responses["fast path 201"].status_code == 201
    assert responses["django publish 201"].status_code == 201
    assert {family: security(response.headers) for family, response in responses.items()} == {
        family: {**EXPECTED, "strict-transport-security": HSTS} for family in responses
    }


def test_plain_http_under_tls_settings_is_redirected_on_both_publish_roads(
    https_server: ServerProcess, api_key: str, channel: str
) -> None:
    body = b'{"data": 1}'
    for extra in ({}, {"Cookie": "theme=dark"}):
        response = publish(https_server.url, api_key, channel, body, **extra)
        assert response.status_code == 301
        assert response.headers["location"].startswith("https://")
        assert "strict-transport-security" not in response.headers
