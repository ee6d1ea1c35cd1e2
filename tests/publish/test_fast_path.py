"""The API-key fast path answers exactly as the Django view behind it does."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from asgiref.typing import HTTPScope
from channels.testing import HttpCommunicator
from django.test import override_settings

from events.models import Channel, Message
from events.provisioning import create_api_key, upsert_channel
from events.publish.fast_path import STANDS_IN_FOR, _eligible_headers
from pushsite.asgi import application
from tests.publish.test_api import REJECTIONS

pytestmark = pytest.mark.django_db(transaction=True)

# A cookie sends the request through Django's middleware and view.
THROUGH_DJANGO = [(b"cookie", b"theme=dark")]


async def publish(slug: str, body: Any, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    communicator = HttpCommunicator(
        application,
        "POST",
        f"/api/channels/{slug}/messages",
        body=raw,
        headers=[
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            *headers,
        ],
    )
    response = await communicator.get_response(timeout=10)
    response["headers"] = {name.decode().lower(): value.decode() for name, value in response["headers"]}
    is_json = response["headers"].get("content-type") == "application/json"
    response["json"] = json.loads(response["body"]) if is_json else None
    return response


@pytest.fixture
def keys() -> dict[str, str]:
    upsert_channel("news")
    upsert_channel("other")
    Channel.objects.create(slug="closed", is_active=False)
    return {
        "none": "",
        "wrong": "psk_00000000_wrong",
        "scoped": create_api_key("news only", ["news"])[1],
        "key": create_api_key("publisher", all_channels=True)[1],
    }


def credentials(keys: dict[str, str], kind: str) -> list[tuple[bytes, bytes]]:
    if kind == "basic":
        return [(b"authorization", b"Basic dXNlcjpwYXNz")]
    return [(b"authorization", f"Bearer {keys[kind]}".encode())] if keys[kind] else []


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    headers = {name: value for name, value in response["headers"].items() if name not in {"location", "date"}}
    body = {name: value for name, value in response["json"].items() if name not in {"id", "published_at"}}
    return {"status": response["status"], "headers": headers, "body": body}


async def test_a_publish_with_a_key_matches_the_django_view(keys: dict[str, str]) -> None:
    fast = await publish("news", {"event": "notice", "data": {"n": 1}}, credentials(keys, "key"))
    slow = await publish(
        "news", {"event": "notice", "data": {"n": 1}}, credentials(keys, "key") + THROUGH_DJANGO
    )
    assert fast["status"] == 201
    assert comparable(fast) == comparable(slow)
    assert (fast["json"]["id"], slow["json"]["id"]) == (1, 2)
    assert fast["headers"]["location"] == "/api/channels/news/messages?after=0&limit=1"
    publisher = f"key:publisher ({keys['key'].split('_')[1]})"
    stored = [m async for m in Message.objects.order_by("sequence").values_list("sequence", "publisher")]
    assert stored == [(1, publisher), (2, publisher)]


@pytest.mark.parametrize(
    ("slug", "body", "kind", "status", "code", "fragment"),
    [row[1:] for row in REJECTIONS],
    ids=[row[0] for row in REJECTIONS],
)
async def test_rejections_match_the_django_view(
    keys: dict[str, str], slug: str, body: Any, kind: str, status: int, code: str, fragment: str
) -> None:
    fast = await publish(slug, body, credentials(keys, kind))
    slow = await publish(slug, body, credentials(keys, kind) + THROUGH_DJANGO)
    assert (fast["status"], fast["json"]["error"]) == (status, code)
    assert fragment in fast["json"]["detail"]
    assert comparable(fast) == comparable(slow)
    assert await Message.objects.acount() == 0


def scope(*extra: tuple[bytes, bytes], scheme: str = "http", method: str = "POST") -> HTTPScope:
    headers = [(b"host", b"testserver"), (b"authorization", b"Bearer psk_x_y"), (b"content-length", b"10")]
    replaced = {name for name, _ in extra}
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": "/api/channels/news/messages",
        "raw_path": b"/api/channels/news/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [header for header in headers if header[0] not in replaced] + list(extra),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
    }


@pytest.mark.parametrize(
    ("request_scope", "eligible"),
    [
        (scope(), True),
        (scope(method="PUT"), False),
        (scope((b"cookie", b"sessionid=1")), False),
        (scope((b"origin", b"https://elsewhere.example")), False),
        (scope((b"authorization", b"Basic dXNlcjpwYXNz")), False),
        (scope((b"content-length", b"65537")), False),
        (scope((b"transfer-encoding", b"chunked"), (b"content-length", b"")), False),
        (scope((b"host", b"evil.example")), False),
    ],
    ids=["key", "put", "cookie", "origin", "basic", "too-large", "unsized", "host"],
)
def test_only_plain_key_publishes_take_the_fast_path(request_scope: HTTPScope, eligible: bool) -> None:
    assert (_eligible_headers(request_scope) is not None) is eligible


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_plain_http_under_https_settings_is_left_to_django_to_redirect() -> None:
    assert _eligible_headers(scope()) is None
    assert _eligible_headers(scope((b"x-forwarded-proto", b"https"))) is not None


def test_the_fast_path_stands_in_for_exactly_the_configured_middleware(settings: Any) -> None:
    # A middleware added, removed or reordered must be judged for what it would
    # do to a key publish, and STANDS_IN_FOR updated with the reason.
    assert list(settings.MIDDLEWARE) == list(STANDS_IN_FOR)
    assert _eligible_headers(scope()) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"MIDDLEWARE": [*STANDS_IN_FOR, "django.middleware.gzip.GZipMiddleware"]},
        {"MIDDLEWARE": list(STANDS_IN_FOR)[1:]},
        {"MIDDLEWARE": list(reversed(STANDS_IN_FOR))},
        {"PREPEND_WWW": True},
        {"DISALLOWED_USER_AGENTS": [re.compile("curl")]},
    ],
    ids=["added", "removed", "reordered", "prepend-www", "disallowed-agents"],
)
def test_settings_the_fast_path_was_not_checked_against_send_every_publish_to_django(
    change: dict[str, Any],
) -> None:
    with override_settings(**change):
        assert _eligible_headers(scope()) is None
    assert _eligible_headers(scope()) is not None


@override_settings(ALLOWED_HOSTS=["public.example"], USE_X_FORWARDED_HOST=True)
def test_the_fast_path_judges_the_host_django_would_under_use_x_forwarded_host() -> None:
    # It judged Host: behind a proxy (Host internal, X-Forwarded-Host public) every key
    # publish went the slow way, and one naming an unserved X-Forwarded-Host with a
    # served Host was taken here while Django's view refuses it (400).
    behind_proxy = scope((b"host", b"internal:8000"), (b"x-forwarded-host", b"public.example"))
    assert _eligible_headers(behind_proxy) is not None
    forged = scope((b"host", b"public.example"), (b"x-forwarded-host", b"evil.example"))
    assert _eligible_headers(forged) is None
