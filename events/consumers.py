"""The SSE stream: ``GET /events/<slug>/`` and ``GET /events/?channel=a&channel=b``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from . import cursors, frames, sse
from .auth import (
    Reader,
    active_channels,
    authenticate_api_key,
    bearer_secret,
    check_read,
    user_from_session_key,
    verify_token,
)
from .conf import conf
from .exceptions import ChannelNotFound, InvalidInput, PermissionDenied, PushsiteError
from .metrics import REJECTED_REQUESTS, stats
from .relay import get_relay
from .streams import Stream, StreamChannel

logger = logging.getLogger(__name__)

# Not a configured alias, so Channels gives a stream no layer channel of its
# own: the per-process relay is the group member (ARCHITECTURE.md §5: a layer
# channel per connection makes every receive scan all of them).
NO_CHANNEL_LAYER = "pushsite.streams-use-the-relay"


@dataclass(frozen=True)
class StreamRequest:
    """What a subscriber asked for, parsed from the ASGI scope (no database)."""

    slugs: list[str]
    cursor: str | None
    token: str | None
    authorization: str | None
    session_key: str | None
    origin: str | None
    own_origin: str


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    # Repeated headers: the last one wins, except cookies which we only read once.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def parse_stream_request(scope: dict[str, Any]) -> StreamRequest:
    headers = _headers(scope)
    host = headers.get("host", "")
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        raise InvalidInput("The Host header names a host this server does not serve.")

    try:
        query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("The query string is malformed.") from exc
    path_slug = scope.get("url_route", {}).get("kwargs", {}).get("slug")
    requested = [path_slug] if path_slug else query.get("channel", [])
    slugs = list(dict.fromkeys(requested))  # drop repeats, keep order
    if not slugs:
        raise InvalidInput("Name at least one channel: /events/<slug>/ or /events/?channel=<slug>.")
    limit = int(conf.MAX_CHANNELS_PER_STREAM)
    if len(slugs) > limit:
        raise InvalidInput(f"A stream may carry at most {limit} channels; {len(slugs)} were asked for.")
    for slug in slugs:
        if not cursors.SLUG.fullmatch(slug):
            raise ChannelNotFound(f"No active channel is called {slug[:60]!r}.")

    cursor = headers.get("last-event-id") or (query.get("lastEventId") or [None])[-1]
    token = (query.get("token") or [None])[-1]
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header just means no session
        cookie = SimpleCookie()
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    scheme = scope.get("scheme", "http")
    return StreamRequest(
        slugs=slugs,
        cursor=cursor,
        token=token,
        authorization=headers.get("authorization"),
        session_key=morsel.value if morsel is not None else None,
        origin=headers.get("origin"),
        own_origin=f"{scheme}://{host}",
    )


@dataclass(frozen=True)
class Authorized:
    channels: list[StreamChannel]
    positions: dict[int, int]
    # Channels whose client position lies beyond the stored end: reset there.
    beyond_end: dict[int, int]
    allow_origin: str | None
    expires_at: float | None


def authorize(request: StreamRequest) -> Authorized:
    """Check the request against the database: channels, credentials, origin, cursor."""
    channels = active_channels(request.slugs)
    reader = Reader()
    secret = bearer_secret(request.authorization)
    if secret is not None:
        reader.key = authenticate_api_key(secret)
    if request.token:
        reader.grant = verify_token(request.token)
    reader.user = user_from_session_key(request.session_key)
    for channel in channels:
        check_read(channel, reader)

    allow_origin = None
    if request.origin is not None and request.origin != request.own_origin:
        refused = [c.slug for c in channels if request.origin not in c.allowed_origins]
        if refused:
            raise_origin_refused(request.origin, refused[0])
        allow_origin = request.origin

    start = cursors.parse_cursor(request.cursor, request.slugs, max_length=int(conf.MAX_CURSOR_LENGTH))
    positions: dict[int, int] = {}
    beyond_end: dict[int, int] = {}
    for channel in channels:
        position = start.get(channel.slug, channel.last_sequence)
        if position > channel.last_sequence:
            beyond_end[channel.pk] = channel.last_sequence
        positions[channel.pk] = position
    # Only a token limits how long a stream may stay open; sessions and keys
    # are re-checked when the client reconnects.
    expires_at = (
        reader.grant.expires_at if reader.grant is not None and not reader.user.is_authenticated else None
    )
    return Authorized(
        channels=[StreamChannel(id=c.pk, slug=c.slug) for c in channels],
        positions=positions,
        beyond_end=beyond_end,
        allow_origin=allow_origin,
        expires_at=expires_at,
    )


def raise_origin_refused(origin: str, slug: str) -> None:
    raise PermissionDenied(f"The channel {slug!r} does not allow pages from {origin[:100]} to subscribe.")


class EventStreamConsumer(AsyncHttpConsumer):
    """Serves one SSE response for as long as the client stays."""

    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Stream | None = None
        self._task: asyncio.Task[Any] | None = None
        self._client_gone = False
        self._ended_by_server = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self._task = asyncio.current_task()
        # AsyncConsumer.__call__ without its await_many_dispatch: with no layer
        # channel there is one source of messages, and awaiting it in this task
        # saves a Task and an asyncio.wait per open stream (memory per idle
        # connection, docs/performance.md). Handlers and dispatch are unchanged.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            if not self._ended_by_server:
                raise

    async def http_request(self, message: dict[str, Any]) -> None:
        # Open the stream and return: Channels dispatches one message at a
        # time, so looping here would starve http.disconnect (STYLE.md #6).
        if message.get("more_body"):
            return
        try:
            request = parse_stream_request(self.scope)
            authorized = await database_sync_to_async(authorize)(request)
        except PushsiteError as error:
            REJECTED_REQUESTS.labels(code=error.code).inc()
            await self.send_error(error)
            raise StopConsumer() from None
        await self.open_stream(authorized)

    async def send_error(self, error: PushsiteError) -> None:
        body = frames.dumps({"error": error.code, "detail": error.detail}).encode()
        await self.send_response(
            error.status,
            body,
            headers=[(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
        )

    async def open_stream(self, authorized: Authorized) -> None:
        headers = [
            (b"content-type", sse.EVENT_STREAM.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-content-type-options", b"nosniff"),
            (b"vary", b"Origin"),
        ]
        if authorized.allow_origin is not None:
            headers.append((b"access-control-allow-origin", authorized.allow_origin.encode()))
        await self.send_headers(status=200, headers=headers)
        await self.send_body(sse.encode_retry(int(conf.RETRY_MILLISECONDS)), more_body=True)

        stream = Stream(
            channels=authorized.channels,
            positions=dict(authorized.positions),
            asgi_send=self.base_send,
            on_close=self._on_stream_closed,
            expires_at=authorized.expires_at,
        )
        self.stream = stream
        stats.connections += 1
        stats.connections_opened += 1
        relay = get_relay()
        for channel in authorized.channels:
            if channel.id in authorized.beyond_end:
                stream.reset_to(channel, authorized.beyond_end[channel.id])
            dispatched = await relay.subscribe(stream, channel.id, channel.slug)
            if stream.closed:
                return
            if stream.positions[channel.id] < dispatched:
                stream.catch_up(channel.id, target=dispatched)
        # An event with only an id: the browser now has a resume point even if
        # nothing is published before it reconnects.
        stream.write(sse.encode_cursor_only(stream.cursor()))
        logger.info(
            "Stream opened: %s from %s",
            ",".join(c.slug for c in authorized.channels),
            _client_address(self.scope),
        )

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        self._client_gone = True
        if self.stream is not None:
            self.stream.close("client disconnected")
        raise StopConsumer()

    def _on_stream_closed(self, reason: str) -> None:
        assert self.stream is not None
        stream = self.stream
        relay = get_relay()
        relay.unsubscribe(stream)
        stats.connections -= 1
        logger.info("Stream closed (%s): %s", reason, ",".join(c.slug for c in stream.channels))
        if self._client_gone:
            return
        # Ended by the server: finish the response if the socket takes it, then
        # stop this consumer (there is no ASGI message to wait for).
        stream.finish()
        self._ended_by_server = True
        if self._task is not None:
            self._task.cancel()


def _client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}" if client else "-"
