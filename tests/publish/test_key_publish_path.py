"""The API-key publish (api.store_with_key): a remembered key costs no query, yet every rule holds at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events.access import auth
from events.exceptions import ChannelNotFound, NotAuthenticated, PermissionDenied
from events.models import ApiKey, Channel, Message, hash_secret
from events.provisioning import create_api_key, upsert_channel
from events.publish.api import store_with_key

pytestmark = pytest.mark.django_db

BODY = b'{"event": "note", "data": {"n": 1}}'


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    auth.verified_keys.clear()
    yield
    auth.verified_keys.clear()


@pytest.fixture
def news() -> Channel:
    return upsert_channel("news")[0]


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


def test_a_remembered_key_publishes_without_a_key_or_channel_lookup(news: Channel) -> None:
    _, secret = create_api_key("scoped", ["news"])
    store_with_key(bearer(secret), "news", BODY)
    with CaptureQueriesContext(connection) as queries:
        message = store_with_key(bearer(secret), "news", BODY)
    assert isinstance(message, Message)
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The sequence bump (with the key's authority) and the INSERT: on PostgreSQL in
    # one statement, else two in one transaction. No key or channel lookup.
    expected = ["WITH"] if connection.vendor == "postgresql" else ["UPDATE", "INSERT"]
    assert [s for s in statements if s in {"SELECT", "UPDATE", "INSERT", "WITH"}] == expected
    stored = Message.objects.get(pk=message.pk)
    assert (stored.sequence, stored.event, stored.data) == (2, "note", {"n": 1})
    assert stored.publisher == message.publisher
    assert stored.created_at == message.created_at


def test_a_revoked_key_is_refused_at_once_although_remembered(news: Channel) -> None:
    _, secret = create_api_key("everything", all_channels=True)
    store_with_key(bearer(secret), "news", BODY)
    ApiKey.objects.update(is_active=False)  # no signal: as another process would
    with pytest.raises(NotAuthenticated):
        store_with_key(bearer(secret), "news", BODY)
    assert Message.objects.count() == 1
    assert Channel.objects.get(slug="news").last_sequence == 1


def test_a_narrowed_key_is_refused_at_once_although_remembered(news: Channel) -> None:
    upsert_channel("other")
    key, secret = create_api_key("scoped", ["news", "other"])
    store_with_key(bearer(secret), "news", BODY)
    key.channels.set(Channel.objects.filter(slug="other"))
    with pytest.raises(PermissionDenied):
        store_with_key(bearer(secret), "news", BODY)
    assert Message.objects.filter(channel=news).count() == 1


def test_a_deactivated_channel_is_refused_at_once(news: Channel) -> None:
    _, secret = create_api_key("everything", all_channels=True)
    store_with_key(bearer(secret), "news", BODY)
    Channel.objects.filter(slug="news").update(is_active=False)
    with pytest.raises(ChannelNotFound):
        store_with_key(bearer(secret), "news", BODY)
    assert Message.objects.count() == 1


def test_a_wrong_secret_is_never_remembered(news: Channel) -> None:
    _, secret = create_api_key("everything", all_channels=True)
    for _ in range(2):
        with pytest.raises(NotAuthenticated):
            store_with_key(bearer(secret + "x"), "news", BODY)
    assert auth.verified_keys.get(hash_secret(secret + "x")) is None


def test_a_remembered_key_is_looked_up_again_after_the_revocation_interval() -> None:
    now = [0.0]
    keys = auth.VerifiedKeys(clock=lambda: now[0])
    key, _secret = create_api_key("everything", all_channels=True)
    keys.put("digest", key)
    now[0] = 9.9
    assert keys.get("digest") is key
    now[0] = 10.0  # PUSHSITE_REVOCATION_SECONDS, default 10
    assert keys.get("digest") is None


def test_the_remembered_keys_are_bounded() -> None:
    keys = auth.VerifiedKeys()
    key, _ = ApiKey.generate("unsaved")
    for number in range(auth.MAX_VERIFIED_KEYS + 5):
        keys.put(str(number), key)
    assert keys.get("0") is None
    assert keys.get(str(auth.MAX_VERIFIED_KEYS + 4)) is key
