"""The JSON API in-process: publish, its whole error table, and history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, override_settings

from events.access.auth import mint_token
from events.models import ApiKey, Channel, Message, Visibility
from events.provisioning import create_api_key, upsert_channel

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/channels/{slug}/messages"


@pytest.fixture
def news() -> Channel:
    return upsert_channel("news")[0]


@pytest.fixture
def other() -> Channel:
    return upsert_channel("other")[0]


@pytest.fixture
def key(news: Channel, other: Channel) -> str:
    return create_api_key("publisher", all_channels=True)[1]


@pytest.fixture
def news_only_key(news: Channel) -> str:
    return create_api_key("news only", ["news"])[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def post(client: AsyncClient, slug: str, body: Any, **headers: str) -> Any:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return await client.post(URL.format(slug=slug), raw, content_type="application/json", headers=headers)


def stored() -> tuple[int, list[int]]:
    return Message.objects.count(), list(
        Channel.objects.order_by("slug").values_list("last_sequence", flat=True)
    )


async def test_publish_with_a_key_stores_and_returns_the_message(news: Channel, key: str) -> None:
    client = AsyncClient()
    response = await post(client, "news", {"event": "notice", "data": {"text": "hi"}}, **bearer(key))
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == 1
    assert body["channel"] == "news"
    assert body["event"] == "notice"
    assert body["data"] == {"text": "hi"}
    assert body["published_at"].endswith("Z")
    message = await Message.objects.aget(channel__slug="news", sequence=1)
    assert message.data == {"text": "hi"}
    assert message.publisher.startswith("key:publisher")
    second = await post(client, "news", {"data": None}, **bearer(key))
    assert second.status_code == 201
    assert second.json()["id"] == 2
    assert second.json()["event"] == "message"


REJECTIONS = [
    # (description, slug, body, headers-kind, status, error code, detail fragment)
    ("no key", "news", {"data": 1}, "none", 401, "unauthorized", "Bearer"),
    ("wrong key", "news", {"data": 1}, "wrong", 401, "unauthorized", "not valid"),
    ("not a bearer header", "news", {"data": 1}, "basic", 401, "unauthorized", "Bearer"),
    ("key of another channel", "other", {"data": 1}, "scoped", 403, "forbidden", "may not use"),
    ("malformed JSON", "news", b"{not json", "key", 400, "invalid", "not valid JSON"),
    ("not UTF-8", "news", b"\xff\xfe", "key", 400, "invalid", "not valid JSON"),
    ("a JSON array", "news", [1, 2], "key", 400, "invalid", "JSON object"),
    ("NaN is not JSON", "news", b'{"data": [NaN]}', "key", 400, "invalid", "NaN is not a JSON value"),
    (
        "Infinity is not JSON",
        "news",
        b'{"data": -Infinity}',
        "key",
        400,
        "invalid",
        "Infinity is not a JSON value",
    ),
    ("no data", "news", {"event": "x"}, "key", 400, "invalid", "'data' is required"),
    ("unknown field", "news", {"data": 1, "evnt": "x"}, "key", 400, "invalid", "'evnt'"),
    ("event not a string", "news", {"data": 1, "event": 5}, "key", 400, "invalid", "event must be a string"),
    ("event with a space", "news", {"data": 1, "event": "a b"}, "key", 400, "invalid", "1 to 64"),
    ("event with a newline", "news", {"data": 1, "event": "a\nevent: x"}, "key", 400, "invalid", "1 to 64"),
    ("event too long", "news", {"data": 1, "event": "e" * 65}, "key", 400, "invalid", "1 to 64"),
    ("empty event", "news", {"data": 1, "event": ""}, "key", 400, "invalid", "1 to 64"),
    ("reserved event", "news", {"data": 1, "event": "pushsite.reset"}, "key", 400, "invalid", "reserved"),
    (
        "a chat message forged by a key",
        "news",
        {"data": {"text": "hi", "author": {"name": "alice", "guest": False}}, "event": "chat.message"},
        "key",
        400,
        "invalid",
        "event 'chat.message' is reserved: types starting with 'chat.' are published only by a chat room's own",
    ),
    (
        "a chat deletion from a key",
        "news",
        {"data": {"id": 1}, "event": "chat.deleted"},
        "key",
        400,
        "invalid",
        "'chat.deleted' is reserved",
    ),
    ("body too large", "news", {"data": "x" * (64 * 1024)}, "key", 413, "too_large", "limit"),
    ("unknown channel", "nope", {"data": 1}, "key", 404, "channel_not_found", "'nope'"),
    ("inactive channel", "closed", {"data": 1}, "key", 404, "channel_not_found", "'closed'"),
]


@pytest.mark.parametrize(
    ("slug", "body", "credentials", "status", "code", "fragment"),
    [row[1:] for row in REJECTIONS],
    ids=[row[0] for row in REJECTIONS],
)
async def test_rejected_publishes_answer_json_and_store_nothing(
    news: Channel,
    other: Channel,
    key: str,
    news_only_key: str,
    slug: str,
    body: Any,
    credentials: str,
    status: int,
    code: str,
    fragment: str,
) -> None:
    closed = (await Channel.objects.acreate(slug="closed", is_active=False)).slug
    assert closed == "closed"
    headers = {
        "none": {},
        "wrong": bearer("psk_00000000_wrong"),
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "scoped": bearer(news_only_key),
        "key": bearer(key),
    }[credentials]
    before = await _stored()
    response = await post(AsyncClient(), slug, body, **headers)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == code
    assert fragment in response.json()["detail"]
    assert await _stored() == before


async def _stored() -> tuple[int, list[int]]:
    return await sync_to_async(stored)()


async def test_revoked_key_is_refused_at_once(news: Channel, key: str) -> None:
    client = AsyncClient()
    assert (await post(client, "news", {"data": 1}, **bearer(key))).status_code == 201
    await ApiKey.objects.aupdate(is_active=False)
    response = await post(client, "news", {"data": 2}, **bearer(key))
    assert response.status_code == 401
    assert await Message.objects.acount() == 1


@override_settings(PUSHSITE={"MAX_MESSAGE_BYTES": 100})
async def test_size_limit_is_a_setting(news: Channel, key: str) -> None:
    client = AsyncClient()
    assert (await post(client, "news", {"data": "x" * 50}, **bearer(key))).status_code == 201
    response = await post(client, "news", {"data": "x" * 120}, **bearer(key))
    assert response.status_code == 413
    assert "limit is 100" in response.json()["detail"]


async def test_wrong_method_is_405_json(news: Channel) -> None:
    response = await AsyncClient().delete(URL.format(slug="news"))
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response["Allow"]


# --- staff sessions --------------------------------------------------------------


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("editor", password="pw-editor-123", is_staff=True)


async def logged_in(username: str, password: str) -> AsyncClient:
    client = AsyncClient(enforce_csrf_checks=True)
    assert await client.alogin(username=username, password=password)
    return client


async def test_staff_session_publishes_with_a_csrf_token(news: Channel, staff: User) -> None:
    client = await logged_in("editor", "pw-editor-123")
    page = await client.get("/channels/news/")
    assert page.status_code == 200
    token = client.cookies["csrftoken"].value
    response = await post(client, "news", {"data": "from the page"}, **{"X-CSRFToken": token})
    assert response.status_code == 201
    assert (await Message.objects.aget(sequence=1)).publisher == "user:editor"


async def test_staff_session_without_csrf_is_refused(news: Channel, staff: User) -> None:
    client = await logged_in("editor", "pw-editor-123")
    response = await post(client, "news", {"data": "forged"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert await Message.objects.acount() == 0


async def test_non_staff_session_may_not_publish(news: Channel) -> None:
    await User.objects.acreate_user("reader", password="pw-reader-123")
    client = await logged_in("reader", "pw-reader-123")
    client.cookies["csrftoken"] = "c" * 32
    response = await post(client, "news", {"data": "x"}, **{"X-CSRFToken": "c" * 32})
    assert response.status_code == 403
    assert await Message.objects.acount() == 0


async def test_a_key_ignores_cookies(news: Channel, key: str, staff: User) -> None:
    # A request with a key needs no CSRF token even when a session cookie is present.
    client = await logged_in("editor", "pw-editor-123")
    response = await post(client, "news", {"data": 1}, **bearer(key))
    assert response.status_code == 201
    assert response.json()["id"] == 1


# --- history -------------------------------------------------------------------------


async def test_history_pages_after_an_id(news: Channel, key: str) -> None:
    client = AsyncClient()
    for n in range(5):
        await post(client, "news", {"data": n}, **bearer(key))
    response = await client.get(URL.format(slug="news"), {"after": 2, "limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["messages"]] == [3, 4]
    assert [m["data"] for m in body["messages"]] == [2, 3]
    assert body["has_more"] is True
    assert body["last_id"] == 5
    rest = (await client.get(URL.format(slug="news"), {"after": 4})).json()
    assert [m["id"] for m in rest["messages"]] == [5]
    assert rest["has_more"] is False


async def test_history_takes_the_streams_cursors(news: Channel, key: str) -> None:
    client = AsyncClient()
    for n in range(3):
        await post(client, "news", {"data": n}, **bearer(key))
    for after in ["1", f"1~{news.epoch}", f"news:1~{news.epoch}", "news:1"]:
        response = await client.get(URL.format(slug="news"), {"after": after})
        assert response.status_code == 200, response.json()
        assert [m["id"] for m in response.json()["messages"]] == [2, 3]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"after": "x"}, "after must be an event id this server sent: a number, or slug:number pairs"),
        ({"after": "-1"}, "after must be an event id this server sent"),
        ({"after": "1~zz!"}, "after must be an event id this server sent"),
        ({"after": "1~00000000"}, "after names another incarnation of channel 'news' (epoch 00000000, now "),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"limit": "1001"}, "at most 1000"),
        ({"limit": "1e3"}, "limit must be a whole number"),
    ],
)
async def test_history_rejects_bad_parameters(news: Channel, query: dict[str, str], fragment: str) -> None:
    response = await AsyncClient().get(URL.format(slug="news"), query)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


async def test_history_follows_subscription_rules(key: str) -> None:
    vault = await Channel.objects.acreate(slug="vault", visibility=Visibility.PRIVATE)
    elsewhere = await Channel.objects.acreate(slug="elsewhere", visibility=Visibility.PRIVATE)
    client = AsyncClient()
    assert (await post(client, "vault", {"data": "secret"}, **bearer(key))).status_code == 201
    anonymous = await client.get(URL.format(slug="vault"))
    # Refused exactly as a channel that does not exist (docs/security.md).
    assert anonymous.status_code == 404
    assert anonymous.json() == {
        "error": "channel_not_found",
        "detail": "No active channel is called 'vault'.",
    }
    wrong_token = await client.get(URL.format(slug="vault"), {"token": mint_token([elsewhere], ttl=60)})
    assert wrong_token.status_code == 404
    with_token = await client.get(URL.format(slug="vault"), {"token": mint_token([vault], ttl=60)})
    assert with_token.status_code == 200
    assert [m["data"] for m in with_token.json()["messages"]] == ["secret"]
    with_key = await client.get(URL.format(slug="vault"), headers=bearer(key))
    assert with_key.status_code == 200


async def test_a_cross_site_form_post_with_a_staff_session_is_refused(news: Channel, staff: User) -> None:
    client = await logged_in("editor", "pw-editor-123")
    response = await client.post(
        URL.format(slug="news"),
        {"event": "message", "data": "forged"},  # form-encoded, as a cross-site <form> would send
        headers={"Origin": "https://evil.example", "Referer": "https://evil.example/page"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert await Message.objects.acount() == 0
