"""The JSON API: publish to a channel and read its history."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from events.access import ratelimit
from events.access.auth import (
    Reader,
    active_channels,
    api_key_from,
    bearer_secret,
    key_for_publishing,
    key_publisher,
    mint_token,
    publishing_key,
    readable_channels,
    require_api_key,
    require_key_for,
    verified_keys,
    verify_token,
)
from events.conf import conf
from events.exceptions import (
    ChannelNotFound,
    InvalidInput,
    MethodNotAllowed,
    NotAuthenticated,
    PermissionDenied,
    PushsiteError,
    ServiceUnavailable,
)
from events.http.numbers import whole_number
from events.http.responses import from_exception
from events.models import ApiKey, Channel, Message, hash_secret
from events.publish import idempotency, validate, writers
from events.publish import store as publishing
from events.wire import cursors
from events.wire.frames import isoformat_utc

logger = logging.getLogger(__name__)

PUBLISH_NEEDS = "Publishing needs 'Authorization: Bearer <api key>' or a staff login."


# Views use asgiref's sync_to_async (Django's request cycle opens and closes
# connections around a view), except publishing, which runs in the shared
# pool (publish_response: it is also called from outside Django's cycle).


@csrf_exempt  # API keys ignore cookies; the session path checks CSRF itself.
async def channel_messages(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST`` publishes to the channel; ``GET`` reads its history."""
    if request.method == "POST":
        return await publish_response(
            functools.partial(publish_from_request, request, slug), slug, request.path
        )
    try:
        if request.method in {"GET", "HEAD"}:
            payload = await sync_to_async(read_history)(request, slug)
            response = JsonResponse(payload)
            # Cross-origin reads are decided per channel by events/access/cors.py.
            response["Vary"] = "Origin, Cookie, Authorization"
            return response
        raise MethodNotAllowed(
            f"{request.method} is not allowed here; use GET or POST.", allow="GET, HEAD, POST"
        )
    except PushsiteError as error:
        return from_exception(error)
    except DatabaseError:
        logger.exception("Database error while handling %s %s", request.method, request.path)
        return database_unavailable()


async def publish_response(
    store: Callable[[], Awaitable[Message | idempotency.Replay]], slug: str, path: str
) -> HttpResponse:
    """Await ``store`` (the group commit), fan out, answer 201; errors as the contract says.

    The Django view's answer; the ASGI fast path (events/publish/fast_path.py) calls
    :func:`publish_stored` and writes the same 201 itself (:func:`created_body`).
    A repeated ``Idempotency-Key`` gets the first answer again, marked as replayed.
    """
    outcome = await publish_stored(store, slug, path)
    if isinstance(outcome, HttpResponse):
        return outcome
    message, payload = outcome
    response = JsonResponse(payload, status=201)
    response["Location"] = message_location(slug, message.sequence)
    return response


async def publish_stored(
    store: Callable[[], Awaitable[Message | idempotency.Replay]], slug: str, path: str
) -> tuple[Message, dict[str, Any]] | HttpResponse:
    """Await ``store``, fan out: the stored message and its JSON (the 201's body), or the answer to send instead.

    The answer instead: a refusal, the database unavailable (503), or a replayed
    ``Idempotency-Key``. The JSON is built once, for the fan-out's frame and the 201.
    """
    started = time.perf_counter()
    try:
        message = await store()
    except PushsiteError as error:
        return from_exception(error)
    except DatabaseError:
        logger.exception("Database error while handling POST %s", path)
        return database_unavailable()
    if isinstance(message, idempotency.Replay):
        # Stored (and fanned out, or replayed by the relays' poll) the first time.
        response = JsonResponse(message.body, status=message.status)
        response["Location"] = message_location(slug, message.body["id"])
        response[idempotency.REPLAYED_HEADER] = "true"
        return response
    payload = publishing.message_json(message, slug)
    publishing.fan_out_json(message, payload)
    publishing.record_published(message, started)
    return message, payload


def created_body(payload: dict[str, Any]) -> bytes:
    """The 201's body: byte for byte what ``JsonResponse(payload)`` holds.

    ``payload`` is a message's JSON (:func:`events.publish.store.message_json`): only
    JSON's own types (its data came from a JSON body), so Django's encoder would add
    nothing to the standard one, which is used here without a new encoder per call.
    """
    return json.dumps(payload).encode()


def message_location(slug: str, sequence: int) -> str:
    return f"/api/channels/{slug}/messages?after={sequence - 1}&limit=1"


def database_unavailable() -> HttpResponse:
    return from_exception(
        ServiceUnavailable("The database is not available; nothing was published. Try again shortly.")
    )


async def publish_from_request(request: HttpRequest, slug: str) -> Message | idempotency.Replay:
    """Check the request in a publish thread, then store it in the group commit."""
    # Not thread-sensitive: Django's handler gives each request its own
    # thread for thread-sensitive calls, and so its own new database
    # connection; the publish threads keep theirs (events/publish/writers.py).
    publish = await writers.run(functools.partial(prepare_from_request, request, slug))
    return await publishing.store_grouped(publish)


def prepare_from_request(request: HttpRequest, slug: str) -> publishing.Publish:
    """Authenticate, count and validate one publish request (runs in a worker thread)."""
    key = api_key_from(request.META.get("HTTP_AUTHORIZATION"))
    publisher = key_publisher(key) if key is not None else _staff_publisher(request)
    channel = active_channels([slug])[0]
    # Counted once the credential may publish here, before the body is read: the order
    # of the API-key path (prepare_with_key) for a key it has not verified recently.
    if key is not None:
        require_key_for(key, channel)
        ratelimit.count(ratelimit.PUBLISH_BY_KEY, key.prefix)
    else:
        ratelimit.count_staff_publish(request.user.pk)
    scope = idempotency.key_scope(key.prefix) if key is not None else idempotency.user_scope(request.user.pk)
    claim = idempotency.claim(request.META.get(idempotency.META_NAME), scope)
    event, data = validate.read_message(validate.request_body(request))
    return publishing.prepared(channel, data, event=event, publisher=publisher, claim=claim)


async def publish_with_key(
    authorization: str, slug: str, body: bytes, idempotency_key: str | None = None
) -> Message | idempotency.Replay:
    """The API-key publish (the fast path): :func:`store_with_key` in the group commit.

    A remembered key with rate to spare is checked on the event loop, with no
    thread hop; otherwise in a publish thread. A refusal by the storing statement
    runs the full check (401, 404 or 403), then stores on that check's word.
    """
    checked = _prepare_on_loop(authorization, slug, body, idempotency_key)
    if checked is None:
        checked = await writers.run(
            functools.partial(prepare_with_key, authorization, slug, body, idempotency_key)
        )
    publish, digest = checked
    try:
        return await publishing.store_grouped(publish)
    except ChannelNotFound:
        verified_keys.forget(digest)
    key, _channel = await writers.run(
        functools.partial(key_for_publishing, authorization, slug, missing=PUBLISH_NEEDS)
    )
    return await publishing.store_grouped(
        dataclasses.replace(publish, key_id=key.pk, publisher=key_publisher(key)[:200])
    )


def _prepare_on_loop(
    authorization: str, slug: str, body: bytes, idempotency_key: str | None
) -> tuple[publishing.Publish, str] | None:
    """:func:`prepare_with_key` when it needs no I/O (a remembered key, rate held); else None."""
    secret = bearer_secret(authorization)
    if secret is None:
        raise NotAuthenticated(PUBLISH_NEEDS)
    digest = hash_secret(secret)
    key = verified_keys.get(digest)
    if key is None or not ratelimit.count_held(ratelimit.PUBLISH_BY_KEY, key.prefix):
        return None
    return _checked_with_key(key, slug, body, idempotency_key), digest


def prepare_with_key(
    authorization: str, slug: str, body: bytes, idempotency_key: str | None = None
) -> tuple[publishing.Publish, str]:
    """Authenticate ``Authorization: Bearer``, count and validate (runs in a worker thread).

    The publish and the digest its key is remembered by.
    """
    key, digest = publishing_key(authorization, slug, missing=PUBLISH_NEEDS)
    ratelimit.count(ratelimit.PUBLISH_BY_KEY, key.prefix)
    return _checked_with_key(key, slug, body, idempotency_key), digest


def _checked_with_key(key: ApiKey, slug: str, body: bytes, idempotency_key: str | None) -> publishing.Publish:
    claim = idempotency.claim(idempotency_key, idempotency.key_scope(key.prefix))
    event, data = validate.read_message(body)
    return publishing.prepared(
        slug, data, event=event, publisher=key_publisher(key), key_id=key.pk, claim=claim
    )


def store_with_key(
    authorization: str, slug: str, body: bytes, idempotency_key: str | None = None
) -> Message | idempotency.Replay:
    """Sync twin of :func:`publish_with_key`: stores alone, in the calling thread's transaction.

    A key verified a moment ago costs no query: its authority is checked in the
    statement that stores (issue 17). When that statement refuses, the full
    check runs to say why (401, 404 or 403); should it pass (the key or channel
    changed in between), the message is stored on that check's word.
    """
    publish, digest = prepare_with_key(authorization, slug, body, idempotency_key)
    try:
        return publishing.store_prepared(publish)
    except ChannelNotFound:
        verified_keys.forget(digest)
    key, _channel = key_for_publishing(authorization, slug, missing=PUBLISH_NEEDS)
    return publishing.store_prepared(
        dataclasses.replace(publish, key_id=key.pk, publisher=key_publisher(key)[:200])
    )


def _staff_publisher(request: HttpRequest) -> str:
    user = request.user
    if not user.is_authenticated:
        raise NotAuthenticated(PUBLISH_NEEDS)
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Only staff users may publish with a session.")
    rejection = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]  # no view: only its csrf_exempt is read
    if rejection is not None:
        raise PermissionDenied("CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.")
    return f"user:{user.get_username()}"


def read_history(request: HttpRequest, slug: str) -> dict[str, Any]:
    """One page of a channel's history, under the same rules as subscribing."""
    raw_after = request.GET.get("after")
    max_limit = conf.HISTORY_MAX_LIMIT
    limit = _int_param(request, "limit", default=conf.HISTORY_DEFAULT_LIMIT, minimum=1)
    if limit > max_limit:
        raise InvalidInput(f"limit may be at most {max_limit}.")
    reader = Reader(user=request.user, key=api_key_from(request.META.get("HTTP_AUTHORIZATION")))
    token = request.GET.get("token")
    if token:
        reader.grant = verify_token(token)
    channel = readable_channels([slug], reader)[0]
    after = _history_start(channel, raw_after)

    rows = list(Message.objects.filter(channel=channel, sequence__gt=after).order_by("sequence")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    oldest = (
        Message.objects.filter(channel=channel)
        .order_by("sequence")
        .values_list("sequence", flat=True)
        .first()
    )
    return {
        "channel": channel.slug,
        "messages": [publishing.message_json(row, channel.slug) for row in rows],
        "has_more": has_more,
        "last_id": channel.last_sequence,
        # When after + 1 < first_available_id, older messages are gone.
        "first_available_id": oldest,
    }


def _history_start(channel: Channel, raw: str | None) -> int:
    """The sequence ``?after=`` names, read as the stream reads a cursor (``12``, ``12~3fa9c0b1``)."""
    start = cursors.parse_cursor(raw, [channel.slug], max_length=conf.MAX_CURSOR_LENGTH, name="after")
    position = start.get(channel.slug)
    if position is None:
        return 0
    if position.epoch is not None and position.epoch != channel.epoch:
        raise InvalidInput(
            f"after names another incarnation of channel {channel.slug!r} (epoch {position.epoch}, "
            f"now {channel.epoch}): what it had is gone; read from after=0."
        )
    return position.sequence


def _int_param(request: HttpRequest, name: str, *, default: int, minimum: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(raw, max_digits=19)
    if value is None:
        raise InvalidInput(f"{name} must be a whole number, not {raw[:40]!r}.")
    if value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}.")
    return value


TOKEN_FIELDS = frozenset({"channels", "ttl", "subject"})
TOKEN_SHAPE = '{"channels": ["<slug>", ...], "ttl": <seconds>, "subject": "<text>"}'


@csrf_exempt  # server-to-server, authenticated by API key only
async def tokens(request: HttpRequest) -> HttpResponse:
    """``POST /api/tokens``: a signed, expiring subscribe token for private channels."""
    if request.method != "POST":
        return from_exception(
            MethodNotAllowed(f"{request.method} is not allowed here; use POST.", allow="POST")
        )
    try:
        payload = await sync_to_async(token_from_request)(request)
    except PushsiteError as error:
        return from_exception(error)
    except DatabaseError:
        logger.exception("Database error while minting a token")
        return from_exception(ServiceUnavailable("The database is not available; try again shortly."))
    return JsonResponse(payload, status=201)


def token_from_request(request: HttpRequest) -> dict[str, Any]:
    """Authenticate the key, validate the body, mint the token (runs in a worker thread)."""
    key = require_api_key(
        request.META.get("HTTP_AUTHORIZATION"),
        missing="Minting tokens needs 'Authorization: Bearer <api key>'.",
    )
    body = validate.request_object(request, fields=TOKEN_FIELDS, shape=TOKEN_SHAPE)
    slugs = body.get("channels")
    if not isinstance(slugs, list) or not slugs or not all(isinstance(s, str) for s in slugs):
        raise InvalidInput("channels must be a non-empty list of channel slugs.")
    max_age = conf.TOKEN_MAX_AGE_SECONDS
    ttl = body.get("ttl", max_age)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= max_age:
        raise InvalidInput(f"ttl must be a whole number of seconds from 1 to {max_age}.")
    subject = body.get("subject", "")
    if not isinstance(subject, str) or len(subject) > 200:
        raise InvalidInput("subject must be a string of at most 200 characters.")
    channels = active_channels(list(dict.fromkeys(slugs)))
    for channel in channels:
        require_key_for(channel=channel, key=key)
    # Bound to the key: revoking it (or narrowing its scope) ends the token too.
    token = mint_token(channels, ttl=ttl, subject=subject, key=key)
    grant = verify_token(token)
    logger.info("Token minted by key %s for %s (ttl %ss)", key.prefix, ",".join(grant.slugs), ttl)
    return {
        "token": token,
        "channels": grant.slugs,
        "expires_at": isoformat_utc(datetime.fromtimestamp(grant.expires_at, tz=UTC)),
    }
