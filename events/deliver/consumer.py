"""The SSE stream: ``GET /events/<slug>/`` and ``GET /events/?channel=a&channel=b``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host
from redis.exceptions import RedisError

from events import signals
from events.access.auth import (
    Reader,
    active_channels,
    authenticate_api_key,
    bearer_secret,
    readable_channels,
    session_from_key,
    unknown_channel,
    user_from_session,
    verify_token,
)
from events.access.revocation import Access
from events.conf import conf
from events.deliver.relay import get_relay
from events.deliver.stream import AsgiSend, Reset, Stream, StreamChannel
from events.exceptions import (
    InvalidInput,
    MethodNotAllowed,
    PermissionDenied,
    PushsiteError,
    RateLimited,
    ServiceUnavailable,
)
from events.metrics import REJECTED_REQUESTS, stats
from events.models import Channel
from events.signals import StreamAttachment
from events.wire import cursors, frames, ndjson, sse

logger = logging.getLogger(__name__)

# Not a configured alias, so Channels gives a stream no layer channel of its
# own: the per-process relay is the group member (ARCHITECTURE.md §5: a layer
# channel per connection makes every receive scan all of them).
NO_CHANNEL_LAYER = "pushsite.streams-use-the-relay"
RETRY_AFTER_SECONDS = 5
SSE_FORMAT = "sse"
NDJSON_FORMAT = "ndjson"
FORMATS = (SSE_FORMAT, NDJSON_FORMAT)
# pushsite.reset reasons for a position that means nothing in the channel as it is.
RESET_UNKNOWN_POSITION = "unknown-position"
RESET_OTHER_EPOCH = "epoch-changed"


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
    format: str = SSE_FORMAT


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    # Repeated headers: the last one wins, except cookies which we only read once.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


def check_host(headers: dict[str, str]) -> str:
    """The Host header, if it names a host this server serves (these paths bypass Django's check)."""
    host = headers.get("host", "")
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        raise InvalidInput("The Host header names a host this server does not serve.")
    return host


def parse_stream_request(scope: dict[str, Any]) -> StreamRequest:
    headers = request_headers(scope)
    host = check_host(headers)

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
            raise unknown_channel(slug)

    output = _output_format(query, headers)
    cursor = headers.get("last-event-id") or (query.get("lastEventId") or [None])[-1]
    if cursor is None and output == NDJSON_FORMAT:
        # NDJSON readers resume with the cursor of the last line they read.
        cursor = (query.get("after") or [None])[-1]
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
        format=output,
    )


def _output_format(query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """SSE unless ``?format=ndjson`` or an Accept header that names NDJSON and not SSE."""
    explicit = (query.get("format") or [None])[-1]
    if explicit is not None:
        if explicit not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {explicit[:40]!r}.")
        return explicit
    accepted = {part.split(";")[0].strip().lower() for part in headers.get("accept", "").split(",")}
    if ndjson.NDJSON in accepted and sse.EVENT_STREAM not in accepted:
        return NDJSON_FORMAT
    return SSE_FORMAT


def ndjson_send(send: AsgiSend) -> AsgiSend:
    """``send``, with every SSE frame of a response body rewritten as its NDJSON line."""

    async def send_lines(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": ndjson.from_sse(message["body"])}
        await send(message)

    return send_lines


@dataclass(frozen=True)
class Authorized:
    channels: list[StreamChannel]
    positions: dict[int, int]
    # Channels where the client's position means nothing here (beyond the
    # stored end, or another epoch): an explicit reset first.
    resets: dict[int, Reset]
    allow_origin: str | None
    expires_at: float | None
    access: Access
    # What features keep for as long as the stream is open (signals.stream_authorized).
    attachments: list[StreamAttachment]


def authorize(request: StreamRequest) -> Authorized:
    """Check the request against the database: credentials, channels, origin, cursor."""
    reader = Reader()
    secret = bearer_secret(request.authorization)
    if secret is not None:
        reader.key = authenticate_api_key(secret)
    if request.token:
        reader.grant = verify_token(request.token)
    session = session_from_key(request.session_key)
    reader.user = user_from_session(session)
    # After the credentials, whose errors name no channel: an unknown channel
    # and one this reader may not read are refused alike.
    channels = readable_channels(request.slugs, reader)

    allow_origin = check_origin(request, channels)

    start = cursors.parse_cursor(request.cursor, request.slugs, max_length=int(conf.MAX_CURSOR_LENGTH))
    positions: dict[int, int] = {}
    resets: dict[int, Reset] = {}
    for channel in channels:
        asked = start.get(channel.slug)
        if asked is None:
            positions[channel.pk] = channel.last_sequence
        elif asked.epoch is not None and asked.epoch != channel.epoch:
            # A position in another incarnation of this slug: the client has
            # seen none of this one, so it gets all of its retained history.
            resets[channel.pk] = Reset(asked, 0, RESET_OTHER_EPOCH)
            positions[channel.pk] = 0
        elif asked.sequence > channel.last_sequence:
            resets[channel.pk] = Reset(asked, channel.last_sequence, RESET_UNKNOWN_POSITION)
            positions[channel.pk] = channel.last_sequence
        else:
            positions[channel.pk] = asked.sequence
    # Only a token limits how long a stream may stay open; sessions and keys
    # are re-checked when the client reconnects.
    expires_at = (
        reader.grant.expires_at if reader.grant is not None and not reader.user.is_authenticated else None
    )
    access = Access(
        session_key=request.session_key if reader.user.is_authenticated else None,
        token_channels=reader.grant.channels if reader.grant is not None else frozenset(),
        key_id=reader.key.pk if reader.key is not None else None,
    )
    responses = signals.stream_authorized.send(
        sender=Authorized, channels=channels, user=reader.user, session=session
    )
    return Authorized(
        access=access,
        channels=[StreamChannel(id=c.pk, slug=c.slug, epoch=c.epoch) for c in channels],
        positions=positions,
        resets=resets,
        allow_origin=allow_origin,
        expires_at=expires_at,
        attachments=[attachment for _receiver, attachment in responses if attachment is not None],
    )


def check_origin(request: StreamRequest, channels: list[Channel]) -> str | None:
    """The origin to allow cross-origin, None for same-origin; refuses any other.

    Exact match against every channel's allowed origins, from the Origin
    header only (never Referer); ``null`` never matches.
    """
    if request.origin is None or request.origin == request.own_origin:
        return None
    for channel in channels:
        if request.origin not in channel.allowed_origins:
            raise PermissionDenied(
                f"The channel {channel.slug!r} does not allow pages from {request.origin[:100]} to subscribe."
            )
    return request.origin


def authorize_origin(request: StreamRequest) -> str | None:
    """For a preflight: are the channels there and is the origin allowed? (No credentials.)"""
    return check_origin(request, active_channels(request.slugs))


class EventStreamConsumer(AsyncHttpConsumer):
    """Serves one SSE response for as long as the client stays."""

    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Stream | None = None
        self._task: asyncio.Task[Any] | None = None
        self._client_gone = False
        self._ended_by_server = False
        self.attachments: list[StreamAttachment] = []

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
        method = self.scope["method"]
        if method == "OPTIONS":
            await self.answer_preflight()
            raise StopConsumer()
        try:
            if method not in {"GET", "HEAD"}:
                raise MethodNotAllowed(f"{method} is not allowed on a stream; subscribe with GET.")
            request = parse_stream_request(self.scope)
            self.check_streams_per_ip()
            authorized = await database_sync_to_async(authorize)(request)
            await self.join_feeds(authorized)
        except PushsiteError as error:
            REJECTED_REQUESTS.labels(code=error.code).inc()
            await self.send_error(error)
            raise StopConsumer() from None
        except DatabaseError:
            logger.exception("Database error while opening a stream.")
            await self.send_error(ServiceUnavailable("The database is not available; retry shortly."))
            raise StopConsumer() from None
        await self.open_stream(authorized, request.format)

    def check_streams_per_ip(self) -> None:
        limit = int(conf.MAX_STREAMS_PER_IP)
        if get_relay().streams_per_ip[_client_address(self.scope)] >= limit:
            raise RateLimited(
                f"This address already holds {limit} open streams on this server; close some first."
            )

    async def join_feeds(self, authorized: Authorized) -> None:
        """Join the channels' groups before answering, so a layer outage is a quick 503."""
        relay = get_relay()
        try:
            async with asyncio.timeout(float(conf.LAYER_TIMEOUT_SECONDS)):
                for channel in authorized.channels:
                    await relay.open_feed(channel.id, channel.slug)
        except (TimeoutError, OSError, RedisError, ChannelFull) as exc:
            logger.warning("Channel layer unavailable for a new stream: %r", exc)
            raise ServiceUnavailable("The channel layer is not available; retry shortly.") from exc

    async def answer_preflight(self) -> None:
        """CORS preflight (a fetch() reader sending Last-Event-ID): allowed per channel."""
        origin = request_headers(self.scope).get("origin")
        headers = [(b"vary", b"Origin"), (b"content-length", b"0")]
        try:
            request = parse_stream_request(self.scope)
            await database_sync_to_async(authorize_origin)(request)
        except (PushsiteError, DatabaseError):
            origin = None
        if origin:
            headers += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-methods", b"GET"),
                (b"access-control-allow-headers", b"Last-Event-ID, Accept"),
                (b"access-control-max-age", b"600"),
            ]
        await self.send_response(204, b"", headers=headers)

    async def send_error(self, error: PushsiteError) -> None:
        body = frames.dumps({"error": error.code, "detail": error.detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            # Errors hold no secrets, and a widget on another site must be able
            # to read why it was refused (no credentials are ever allowed).
            (b"access-control-allow-origin", b"*"),
        ]
        if isinstance(error, MethodNotAllowed):
            headers.append((b"allow", b"GET, HEAD, OPTIONS"))
        if isinstance(error, ServiceUnavailable):
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        if isinstance(error, RateLimited):
            headers.append((b"retry-after", str(error.retry_after).encode()))
        await self.send_response(error.status, body, headers=headers)

    async def open_stream(self, authorized: Authorized, output: str = SSE_FORMAT) -> None:
        # The one place the output format matters: streams write SSE frames,
        # and an NDJSON response rewrites them as they are sent (events/wire/ndjson.py).
        if output == NDJSON_FORMAT:
            content_type, asgi_send = ndjson.NDJSON, ndjson_send(self.base_send)
        else:
            content_type, asgi_send = sse.EVENT_STREAM, self.base_send
        headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-content-type-options", b"nosniff"),
            (b"vary", b"Origin, Accept"),
        ]
        if authorized.allow_origin is not None:
            headers.append((b"access-control-allow-origin", authorized.allow_origin.encode()))
        await self.send_headers(status=200, headers=headers)

        stream = Stream(
            channels=authorized.channels,
            positions=dict(authorized.positions),
            asgi_send=asgi_send,
            on_close=self._on_stream_closed,
            expires_at=authorized.expires_at,
            access=authorized.access,
            resets=authorized.resets,
        )
        self.stream = stream
        get_relay().streams_per_ip[_client_address(self.scope)] += 1
        stats.connections += 1
        stats.connections_opened += 1
        # The first bytes (they also make the server send the headers now): the
        # retry hint in the same block as the open event, which carries the
        # stream's id, so the client has a resume point even if nothing is
        # published before it reconnects. Resets and replay follow it.
        stream.write(
            frames.open_frame(
                [c.slug for c in authorized.channels],
                cursor=stream.cursor(),
                retry_milliseconds=int(conf.RETRY_MILLISECONDS),
            )
        )
        relay = get_relay()
        for channel in authorized.channels:
            stream.write_pending_reset(channel)
            if stream.closed:  # the opening write failed, say
                return
            try:
                dispatched = await relay.subscribe(stream, channel.id, channel.slug)
            except Exception:
                # The feed was joined a moment ago; losing the layer right now
                # ends this stream and the client reconnects.
                logger.warning("Could not attach a new stream to its feed.", exc_info=True)
                stream.close("channel layer unavailable")
                return
            if stream.closed:
                # Closed while it was being attached: its close already left the feeds.
                relay.unsubscribe(stream)
                return
            if stream.positions[channel.id] < dispatched:
                stream.catch_up(channel.id, target=dispatched)
        self.attachments = authorized.attachments
        for attachment in self.attachments:
            attachment.open()
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
        address = _client_address(self.scope)
        relay.streams_per_ip[address] -= 1
        if relay.streams_per_ip[address] <= 0:
            del relay.streams_per_ip[address]
        for attachment in self.attachments:
            attachment.close()
        stats.connections -= 1
        logger.info("Stream closed (%s): %s", reason, ",".join(c.slug for c in stream.channels))
        if self._client_gone:
            return
        # Ended by the server: say why and finish the response if the socket
        # takes it, then stop this consumer (there is no ASGI message to wait for).
        stream.finish(frames.close_fields(reason))
        self._ended_by_server = True
        if self._task is not None:
            self._task.cancel()


def _client_address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}" if client else "-"
