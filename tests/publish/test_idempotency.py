"""Idempotency-Key on every publish path: replays, conflicts, bad keys, races, expiry (issue 15)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient
from django.utils import timezone

from events.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidInput, NotAuthenticated
from events.models import ApiKey, Channel, Message, PublishReceipt
from events.provisioning import create_api_key, upsert_channel
from events.publish import api, idempotency
from events.publish.ingest import StreamPublishConsumer
from events.publish.store import apublish, publish
from tests.publish.test_fast_path import THROUGH_DJANGO
from tests.publish.test_fast_path import publish as asgi_publish
from tests.support.asgi import answer_of, http_scope, stream_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]

KEY_HEADER = b"idempotency-key"
REPLAYED = "idempotent-replayed"


@pytest.fixture
def news() -> Channel:
    upsert_channel("other")
    return upsert_channel("news")[0]


@pytest.fixture
def secret(news: Channel) -> str:
    return create_api_key("publisher", all_channels=True)[1]


def with_key(secret: str, key: str | None, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    headers = [(b"authorization", f"Bearer {secret}".encode()), *extra]
    if key is not None:
        headers.append((KEY_HEADER, key.encode("latin-1")))
    return headers


def stored(slug: str = "news") -> list[tuple[int, Any]]:
    return list(
        Message.objects.filter(channel__slug=slug).order_by("sequence").values_list("sequence", "data")
    )


# --- JSON API: fast path and Django view ---------------------------------------------------


async def test_a_retried_key_gets_the_original_answer_and_stores_nothing(secret: str) -> None:
    first = await asgi_publish("news", {"event": "notice", "data": {"n": 1}}, with_key(secret, "k-1"))
    retry = await asgi_publish("news", {"event": "notice", "data": {"n": 1}}, with_key(secret, "k-1"))
    assert first["status"] == retry["status"] == 201
    assert retry["json"] == first["json"]
    assert (
        retry["headers"]["location"]
        == first["headers"]["location"]
        == "/api/channels/news/messages?after=0&limit=1"
    )
    assert REPLAYED not in first["headers"]
    assert retry["headers"][REPLAYED] == "true"
    # Through Django's middleware and view (a cookie sends it there): the same receipt.
    django = await asgi_publish(
        "news", {"data": {"n": 1}, "event": "notice"}, with_key(secret, "k-1", *THROUGH_DJANGO)
    )
    assert django["status"] == 201
    assert django["json"] == first["json"]
    assert django["headers"][REPLAYED] == "true"
    assert await Message.objects.filter(channel__slug="news").acount() == 1
    assert (await Channel.objects.aget(slug="news")).last_sequence == 1
    # Without a key, or with another, each publish is new.
    again = await asgi_publish("news", {"event": "notice", "data": {"n": 1}}, with_key(secret, "k-2"))
    plain = await asgi_publish("news", {"event": "notice", "data": {"n": 1}}, with_key(secret, None))
    assert (again["json"]["id"], plain["json"]["id"]) == (2, 3)


async def test_the_same_event_and_data_in_other_json_spelling_is_the_same_request(secret: str) -> None:
    first = await asgi_publish("news", b'{"data": {"a": 1, "b": [1, 2]}}', with_key(secret, "k"))
    retry = await asgi_publish("news", b'{"data":{"b":[1,2],"a":1},"event":"message"}', with_key(secret, "k"))
    assert retry["json"] == first["json"]
    assert retry["headers"][REPLAYED] == "true"


@pytest.mark.parametrize("through", ["fast path", "django"])
async def test_the_same_key_with_another_body_is_a_422_and_stores_nothing(secret: str, through: str) -> None:
    extra = THROUGH_DJANGO if through == "django" else []
    await asgi_publish("news", {"data": 1}, with_key(secret, "k", *extra))
    for body in ({"data": 2}, {"data": 1, "event": "other"}):
        conflict = await asgi_publish("news", body, with_key(secret, "k", *extra))
        assert conflict["status"] == 422
        assert conflict["json"]["error"] == "idempotency_key_reused"
        assert (
            "Idempotency-Key was already used on this channel for a different request"
            in (conflict["json"]["detail"])
        )
    assert await Message.objects.acount() == 1


BAD_KEYS = [
    ("empty", ""),
    ("too long", "k" * 256),
    ("not ASCII", "clé"),
    ("a control character", "a\x7fb"),
    ("a tab", "a\tb"),
]
BAD_KEY_DETAIL = "The Idempotency-Key header must be 1 to 255 printable ASCII characters"


@pytest.mark.parametrize("key", [key for _, key in BAD_KEYS], ids=[name for name, _ in BAD_KEYS])
async def test_a_bad_key_is_the_same_400_on_every_path(secret: str, key: str) -> None:
    answers = [
        await asgi_publish("news", {"data": 1}, with_key(secret, key)),
        await asgi_publish("news", {"data": 1}, with_key(secret, key, *THROUGH_DJANGO)),
    ]
    streamed = await stream_publish(
        "news",
        [b'{"data": 1}\n'],
        authorization=f"Bearer {secret}",
        extra_headers={"idempotency-key": key},
    )
    assert streamed.status == 400
    answers.append({"status": streamed.status, "json": streamed.json()})
    for answer in answers:
        assert answer["status"] == 400
        assert answer["json"]["error"] == "invalid"
        assert answer["json"]["detail"].startswith(BAD_KEY_DETAIL)
    with pytest.raises(InvalidInput, match=BAD_KEY_DETAIL):
        await apublish("news", 1, idempotency_key=key)
    assert await Message.objects.acount() == 0


def test_the_longest_key_and_every_printable_character_are_accepted() -> None:
    assert idempotency.checked_key("k" * 255) == "k" * 255
    printable = "".join(map(chr, range(0x20, 0x7F)))
    assert idempotency.checked_key(printable) == printable


@pytest.fixture
def other_secret(news: Channel) -> str:
    return create_api_key("someone else", all_channels=True)[1]


async def test_keys_are_scoped_to_the_publisher_and_the_channel(secret: str, other_secret: str) -> None:
    mine = await asgi_publish("news", {"data": "mine"}, with_key(secret, "shared"))
    # Another key's same Idempotency-Key neither replays mine nor collides with it.
    theirs = await asgi_publish("news", {"data": "theirs"}, with_key(other_secret, "shared"))
    elsewhere = await asgi_publish("other", {"data": "mine"}, with_key(secret, "shared"))
    assert [mine["status"], theirs["status"], elsewhere["status"]] == [201, 201, 201]
    assert REPLAYED not in theirs["headers"]
    assert REPLAYED not in elsewhere["headers"]
    assert (mine["json"]["id"], theirs["json"]["id"], elsewhere["json"]["id"]) == (1, 2, 1)
    assert await PublishReceipt.objects.acount() == 3


# --- staff sessions ---------------------------------------------------------------------------


@pytest.fixture
def staff(news: Channel) -> User:
    return User.objects.create_user("editor", password="pw-editor-123", is_staff=True)


async def test_a_staff_session_with_csrf_replays_its_key_and_has_its_own_scope(
    staff: User, secret: str
) -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    assert await client.alogin(username="editor", password="pw-editor-123")
    await client.get("/channels/news/")
    token = client.cookies["csrftoken"].value

    async def post(data: Any) -> Any:
        return await client.post(
            "/api/channels/news/messages",
            json.dumps({"data": data}),
            content_type="application/json",
            headers={"X-CSRFToken": token, "Idempotency-Key": "from-the-page"},
        )

    first, retry = await post("hello"), await post("hello")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Location"] == first["Location"]
    assert retry[idempotency.REPLAYED_HEADER] == "true"
    assert (await post("changed")).status_code == 422
    # An API key using the same Idempotency-Key is another publisher.
    keyed = await asgi_publish("news", {"data": "hello"}, with_key(secret, "from-the-page"))
    assert keyed["status"] == 201
    assert keyed["json"]["id"] == 2
    assert [data for _, data in await _stored()] == ["hello", "hello"]


async def _stored() -> list[tuple[int, Any]]:
    return [row async for row in Message.objects.order_by("sequence").values_list("sequence", "data")]


# --- the Python API ---------------------------------------------------------------------------


def test_publish_with_a_key_returns_the_first_message(news: Channel) -> None:
    first = publish("news", {"n": 1}, publisher="importer", idempotency_key="row-17")
    again = publish(news, {"n": 1}, publisher="importer", idempotency_key="row-17")
    assert again.pk == first.pk
    assert again.sequence == first.sequence == 1
    assert again.channel.slug == "news"
    assert stored() == [(1, {"n": 1})]
    with pytest.raises(IdempotencyKeyReused):
        publish("news", {"n": 2}, publisher="importer", idempotency_key="row-17")
    # Another publisher name is another scope.
    assert publish("news", {"n": 1}, publisher="other job", idempotency_key="row-17").sequence == 2


def test_a_replay_outlives_the_message_s_own_retention(news: Channel) -> None:
    first = publish("news", {"n": 1}, event="notice", idempotency_key="k")
    Message.objects.all().delete()  # pruned by the channel's retention
    again = publish("news", {"n": 1}, event="notice", idempotency_key="k")
    assert (again.pk, again.sequence, again.event, again.data) == (first.pk, 1, "notice", {"n": 1})
    assert again.created_at == first.created_at.replace(
        microsecond=first.created_at.microsecond // 1000 * 1000
    )
    assert Message.objects.count() == 0


async def test_apublish_with_a_key_returns_the_first_message(news: Channel) -> None:
    first = await apublish("news", [1, 2], idempotency_key="async")
    again = await apublish("news", [1, 2], idempotency_key="async")
    assert (again.pk, again.sequence) == (first.pk, 1)
    assert await Message.objects.acount() == 1


# --- concurrency ------------------------------------------------------------------------------

RACERS = 8


def test_racing_retries_store_one_message(secret: str) -> None:
    """Threads release the same keyed publish at once: one row, every answer the same message."""
    barrier = threading.Barrier(RACERS)
    results: list[Any] = []
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(api.store_with_key(f"Bearer {secret}", "news", b'{"data": "once"}', "race"))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == RACERS
    fresh = [result for result in results if isinstance(result, Message)]
    replays = [result for result in results if isinstance(result, idempotency.Replay)]
    print(f"racing retries: {len(fresh)} stored, {len(replays)} replayed")
    assert len(fresh) == 1
    assert {replay.body["id"] for replay in replays} == {fresh[0].sequence}
    assert stored() == [(1, "once")]
    assert Channel.objects.get(slug="news").last_sequence == 1


# --- expiry and pruning -----------------------------------------------------------------------


async def test_an_expired_key_publishes_again(settings: Any, secret: str) -> None:
    await asgi_publish("news", {"data": 1}, with_key(secret, "k"))
    await PublishReceipt.objects.aupdate(created_at=timezone.now() - timedelta(days=1, seconds=1))
    again = await asgi_publish("news", {"data": 2}, with_key(secret, "k"))
    assert again["status"] == 201
    assert REPLAYED not in again["headers"]
    assert again["json"]["id"] == 2
    settings.PUSHSITE = {"IDEMPOTENCY_SECONDS": 3600 * 48}  # longer retention: still a replay
    await PublishReceipt.objects.aupdate(created_at=timezone.now() - timedelta(days=1, seconds=1))
    replay = await asgi_publish("news", {"data": 2}, with_key(secret, "k"))
    assert replay["headers"][REPLAYED] == "true"


def test_pruning_deletes_expired_receipts_in_bounded_batches(news: Channel) -> None:
    old = timezone.now() - timedelta(days=2)
    PublishReceipt.objects.bulk_create(
        [
            PublishReceipt(channel=news, scope="code:", key=f"old-{n}", created_at=old, status=201)
            for n in range(7)
        ]
        + [PublishReceipt(channel=news, scope="code:", key=f"new-{n}", status=201) for n in range(3)]
        # An old stream still running (its lease is current) stays.
        + [
            PublishReceipt(
                channel=news,
                scope="code:",
                key="running",
                created_at=old,
                running_until=timezone.now() + timedelta(minutes=1),
            )
        ]
    )
    assert idempotency.prune_expired(batch=3, batches=2) == 6
    assert idempotency.prune_expired(batch=3, batches=2) == 1
    assert idempotency.prune_expired(batch=3, batches=2) == 0
    assert sorted(PublishReceipt.objects.values_list("key", flat=True)) == [
        "new-0",
        "new-1",
        "new-2",
        "running",
    ]


async def test_pruning_runs_on_the_tick(news: Channel) -> None:
    await PublishReceipt.objects.acreate(
        channel=news, scope="code:", key="old", created_at=timezone.now() - timedelta(days=2), status=201
    )
    idempotency._pace._last = float("-inf")
    await idempotency.prune_on_tick(sender=None, now=10**9)
    await idempotency.job.wait()
    assert await PublishReceipt.objects.acount() == 0


# --- rate limits ------------------------------------------------------------------------------


async def test_a_replay_counts_against_the_publish_rate(settings: Any, secret: str) -> None:
    settings.PUSHSITE = {"PUBLISH_RATE_MESSAGES": 2, "PUBLISH_RATE_SECONDS": 3600}
    assert (await asgi_publish("news", {"data": 1}, with_key(secret, "k")))["status"] == 201
    assert (await asgi_publish("news", {"data": 1}, with_key(secret, "k")))["status"] == 201
    limited = await asgi_publish("news", {"data": 1}, with_key(secret, "k"))
    assert limited["status"] == 429
    assert await Message.objects.acount() == 1


@pytest.mark.parametrize("change", ["revoked", "narrowed", "channel-off"])
async def test_a_replay_is_refused_once_its_key_or_channel_may_not_publish(
    secret: str, news: Channel, change: str
) -> None:
    # A key verified a moment ago is checked in the statement that stores; a replay
    # stores nothing, so for PUSHSITE_REVOCATION_SECONDS a revoked or narrowed key (or a
    # switched-off channel) still got 201 Idempotent-Replayed on the fast path, while the
    # Django view and the streaming publish refused it at once.
    first = await asgi_publish("news", {"data": 1}, with_key(secret, "k"))
    assert first["status"] == 201
    if change == "revoked":
        await ApiKey.objects.filter(name="publisher").aupdate(is_active=False)
        expected = (401, "unauthorized")
    elif change == "narrowed":
        await ApiKey.objects.filter(name="publisher").aupdate(all_channels=False)
        expected = (403, "forbidden")
    else:
        await Channel.objects.filter(pk=news.pk).aupdate(is_active=False)
        expected = (404, "channel_not_found")
    for through in ([], THROUGH_DJANGO):
        retry = await asgi_publish("news", {"data": 1}, with_key(secret, "k", *through))
        assert (retry["status"], retry["json"]["error"]) == expected, through
        assert REPLAYED not in retry["headers"]
    assert await Message.objects.acount() == 1


def test_the_sync_key_publish_refuses_a_replay_for_a_revoked_key(secret: str, news: Channel) -> None:
    body = b'{"data": 1}'
    assert isinstance(api.store_with_key(f"Bearer {secret}", "news", body, "k"), Message)
    ApiKey.objects.filter(name="publisher").update(is_active=False)
    with pytest.raises(NotAuthenticated):
        api.store_with_key(f"Bearer {secret}", "news", body, "k")


# --- streaming publish ------------------------------------------------------------------------

LINES = [b'{"data": "a"}\n', b'{"event": "token", "data": "b"}\n']


async def streamed(secret: str, key: str, chunks: list[bytes], slug: str = "news") -> Any:
    return await stream_publish(
        slug, chunks, authorization=f"Bearer {secret}", extra_headers={"idempotency-key": key}
    )


async def test_a_retried_stream_gets_its_summary_and_stores_nothing(secret: str) -> None:
    first = await streamed(secret, "s-1", LINES)
    assert first.status == 201
    assert first.json()["status"] == "done"
    assert REPLAYED not in first.headers
    count = await Message.objects.acount()
    assert count == 3  # two parts and the end
    # The same body in other chunks is the same body.
    retry = await streamed(secret, "s-1", [b"".join(LINES)[:5], b"".join(LINES)[5:]])
    assert retry.status == 201
    assert retry.json() == first.json()
    assert retry.headers[REPLAYED] == "true"
    assert await Message.objects.acount() == count
    for other in ([LINES[0]], [*LINES, b'{"data": "c"}\n'], [LINES[1], LINES[0]]):
        conflict = await streamed(secret, "s-1", other)
        assert conflict.status == 422
        assert conflict.json()["error"] == "idempotency_key_reused"
        assert "stream" not in conflict.json()  # nothing started
    # The key of a stream is not a message's: the JSON API calls it a different request.
    message = await asgi_publish("news", {"data": "a"}, with_key(secret, "s-1"))
    assert message["status"] == 422
    assert await Message.objects.acount() == count


async def test_a_stream_still_running_makes_a_retry_409(secret: str) -> None:
    scope = http_scope(
        "POST",
        "/api/channels/news/stream",
        {
            "content-type": "application/x-ndjson",
            "authorization": f"Bearer {secret}",
            "idempotency-key": "busy",
        },
        url_route={"args": (), "kwargs": {"slug": "news"}},
    )
    running = ApplicationCommunicator(StreamPublishConsumer.as_asgi(), scope)
    await running.send_input({"type": "http.request", "body": LINES[0], "more_body": True})
    async with asyncio.timeout(10):
        while not await Message.objects.filter(channel__slug="news").aexists():
            await running.receive_nothing(timeout=0.05)  # the first part is stored once it was read
    retry = await streamed(secret, "busy", LINES)
    assert retry.status == 409
    assert retry.json()["error"] == "idempotency_key_in_use"
    await running.send_input({"type": "http.request", "body": LINES[1], "more_body": False})
    first = await answer_of(running)
    assert first.status == 201
    replay = await streamed(secret, "busy", LINES)
    assert replay.status == 201
    assert replay.json() == first.json()
    assert await Message.objects.acount() == 3


async def test_a_failed_stream_frees_its_key(secret: str) -> None:
    failed = await streamed(secret, "f", [LINES[0], b"not json\n"])
    assert failed.status == 400
    assert failed.json()["status"] == "failed"
    assert await PublishReceipt.objects.acount() == 0
    again = await streamed(secret, "f", LINES)
    assert again.status == 201
    assert REPLAYED not in again.headers
    assert again.json()["stream"] != failed.json()["stream"]


async def test_a_lapsed_lease_is_taken_over(secret: str, news: Channel) -> None:
    """A stream whose process died never ends: once its lease lapses, a retry runs the stream."""
    now = timezone.now()
    await PublishReceipt.objects.acreate(
        channel=news,
        scope=idempotency.key_scope(secret.split("_")[1]),
        key="orphan",
        created_at=now,
        running_until=now,
    )
    answer = await streamed(secret, "orphan", LINES)
    assert answer.status == 201
    receipt = await PublishReceipt.objects.aget(key="orphan")
    assert receipt.status == 201
    assert receipt.response == answer.json()
    assert receipt.running_until is None


def test_a_running_stream_renews_its_lease(news: Channel) -> None:
    claim = idempotency.Claim("long", "key:00000000")
    held = idempotency.claim_stream(claim, news, "application/x-ndjson")
    assert isinstance(held, idempotency.StreamClaim)
    assert not held.renewal_due()  # not before half the lease has gone
    lapsed = timezone.now() - timedelta(seconds=1)
    PublishReceipt.objects.filter(pk=held.receipt_id).update(running_until=lapsed)
    held.renew()
    receipt = PublishReceipt.objects.get(pk=held.receipt_id)
    assert receipt.running_until is not None
    assert receipt.running_until > timezone.now() + idempotency.lease() / 2
    with pytest.raises(IdempotencyKeyInUse):
        idempotency.claim_stream(claim, news, "application/x-ndjson")
