"""The SSE stream: ``GET /events/<slug>/`` and ``GET /events/?channel=a&channel=b``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from asgiref.typing import (
    ASGIReceiveCallable,
    ASGISendEvent,
    HTTPDisconnectEvent,
    HTTPRequestEvent,
)
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from redis.exceptions import RedisError

from events import signals
from events.access import stream_slots
from events.access.auth import (
    Reader,
    active_channels,
    api_key_from,
    readable_channels,
    session_from_key,
    token_expiry,
    unknown_channel,
    user_from_session,
    verify_token,
)
from events.access.revocation import Access
from events.conf import conf
from events.deliver import directory, history
from events.deliver.admission import BatchedAdmission
from events.deliver.direct import claim_direct_writer
from events.deliver.holdings import Holdings
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
from events.http.address import client_address
from events.http.asgi import RoutedHTTPScope, request_headers
from events.http.hosts import check_host
from events.http.responses import send_error
from events.metrics import stats
from events.models import Channel
from events.signals import StreamAttachment
from events.wire import cursors, frames, ndjson, sse

logger = logging.getLogger(__name__)

# Not a configured alias, so Channels gives a stream no layer channel of its
# own: the per-process relay is the group member (ARCHITECTURE.md §5: a layer
# channel per connection makes every receive scan all of them).
NO_CHANNEL_LAYER = "pushsite.streams-use-the-relay"
SSE_FORMAT = "sse"
NDJSON_FORMAT = "ndjson"
FORMATS = (SSE_FORMAT, NDJSON_FORMAT)
# pushsite.reset reasons for a position that means nothing in the channel as it is.
RESET_UNKNOWN_POSITION = "unknown-position"
RESET_OTHER_EPOCH = "epoch-changed"
# The access of every reader admitted without credentials: one shared object (Access is frozen).
ANONYMOUS = Access(session_key=None, token=None, key_id=None)


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
    # ?rewind=N: the last N stored messages of each channel first (ignored
    # when a cursor is given: Last-Event-ID wins).
    rewind: int = 0


def parse_stream_request(scope: RoutedHTTPScope) -> StreamRequest:
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
    limit = conf.MAX_CHANNELS_PER_STREAM
    if len(slugs) > limit:
        raise InvalidInput(f"A stream may carry at most {limit} channels; {len(slugs)} were asked for.")
    for slug in slugs:
        if not cursors.SLUG.fullmatch(slug):
            raise unknown_channel(slug)

    output = _output_format(query, headers)
    cursor = headers.get("last-event-id") or _last(query, "lastEventId")
    if cursor is None and output == NDJSON_FORMAT:
        # NDJSON readers resume with the cursor of the last line they read.
        cursor = _last(query, "after")
        cursors.parse_cursor(cursor, slugs, max_length=conf.MAX_CURSOR_LENGTH, name="after")  # errors name it
    rewind = parse_rewind(_last(query, "rewind"))
    token = _last(query, "token")
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
        rewind=rewind,
    )


def _last(query: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, None if it is absent (a repeated parameter: the last wins)."""
    values = query.get(name)
    return values[-1] if values else None


def parse_rewind(raw: str | None) -> int:
    """``?rewind=N``: a whole number from 0 to ``MAX_REWIND``; absent or empty is 0."""
    if raw is None or raw == "":
        return 0
    limit = conf.MAX_REWIND
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) > limit:
        raise InvalidInput(f"rewind must be a whole number from 0 to {limit}, not {raw[:40]!r}.")
    return int(raw)


def _output_format(query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """SSE unless ``?format=ndjson`` or an Accept header that names NDJSON and not SSE."""
    explicit = _last(query, "format")
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

    async def send_lines(message: ASGISendEvent) -> None:
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
    # Slug -> title, for the open event (a widget's default heading).
    titles: dict[str, str] | None = None
    history: bool = False
    # The rows behind ``channels``, for the process's channel directory (events/deliver/directory.py).
    rows: list[Channel] = field(default_factory=list)


def authorize(request: StreamRequest, active: Mapping[str, Channel] | None = None) -> Authorized:
    """Check the request against the database: credentials, channels, origin, cursor.

    ``active``: the active channels by slug, read once for a batch of requests
    (events/deliver/admission.py); None reads this request's own.
    """
    reader = Reader(key=api_key_from(request.authorization))
    if request.token:
        reader.grant = verify_token(request.token)
    session = session_from_key(request.session_key)
    reader.user = user_from_session(session)
    # After the credentials, whose errors name no channel: an unknown channel
    # and one this reader may not read are refused alike.
    channels = readable_channels(request.slugs, reader, active=active)

    allow_origin = check_origin(request, channels)

    start = cursors.parse_cursor(request.cursor, request.slugs, max_length=conf.MAX_CURSOR_LENGTH)
    rewind = request.rewind if not request.cursor else 0
    positions: dict[int, int] = {}
    resets: dict[int, Reset] = {}
    for channel in channels:
        asked = start.get(channel.slug)
        if asked is None:
            live = history.rewind_position(channel, rewind) if rewind else channel.last_sequence
            positions[channel.pk] = live
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
    # Each credential is its own grant: the token's expiry ends the stream when
    # one of its channels is allowed by the token alone, whatever else came
    # with the request. Sessions and keys are re-checked by the access sweep.
    expires_at = token_expiry(channels, reader)
    access = Access(
        session_key=request.session_key if reader.user.is_authenticated else None,
        token=reader.grant,
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
        # django-stubs types every signal response as str | None; these receivers return attachments.
        attachments=[attachment for _receiver, attachment in responses if attachment is not None],  # type: ignore[misc]
        titles={c.slug: c.display_title for c in channels},
        # Stored messages follow the open event (a resume, a rewind, a reset).
        history=any(positions[c.pk] < c.last_sequence for c in channels),
        rows=channels,
    )


# ``authorize`` for the streams opening together: one thread hop and one channel query per batch.
admit_from_database: BatchedAdmission[StreamRequest, Authorized] = BatchedAdmission(authorize)


def admit_from_directory(request: StreamRequest) -> Authorized | None:
    """An anonymous live reader of public channels, admitted without the database; None for any other.

    events/deliver/directory.py says when this applies and how it stays fresh.
    Runs on the event loop: ``stream_authorized`` receivers get only public,
    non-chat channels here and must not touch the database for them.
    """
    if request.cursor or request.rewind or request.token or request.authorization or request.session_key:
        return None
    relay = get_relay()
    channels = relay.directory.lookup(request.slugs, max_age=directory.max_age())
    if channels is None:
        return None
    positions: dict[int, int] = {}
    for channel in channels:
        position = relay.live_position(channel)
        if position is None:
            return None
        positions[channel.pk] = position
    allow_origin = check_origin(request, channels)
    user = AnonymousUser()
    responses = signals.stream_authorized.send(sender=Authorized, channels=channels, user=user, session=None)
    return Authorized(
        access=ANONYMOUS,
        channels=[StreamChannel(id=c.pk, slug=c.slug, epoch=c.epoch) for c in channels],
        positions=positions,
        resets={},
        allow_origin=allow_origin,
        expires_at=None,
        attachments=[attachment for _receiver, attachment in responses if attachment is not None],  # type: ignore[misc]
        titles={c.slug: c.display_title for c in channels},
        history=False,
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


class EventStreamConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels ships no type hints
    """Serves one SSE response for as long as the client stays."""

    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: Stream | None = None
        self._task: asyncio.Task[Any] | None = None
        self._client_gone = False
        self._ended_by_server = False
        # The stream's slot, lease and attachments; a detached stream takes them along.
        self.holdings = Holdings()
        # True once the stream owns its connection (events/deliver/direct.py): this task ends.
        self._detached = False

    async def __call__(self, scope: RoutedHTTPScope, receive: ASGIReceiveCallable, send: AsgiSend) -> None:
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
        finally:
            if not self._detached:
                # Refused, failed, ended or cancelled: the slot goes back (a detached
                # stream gives it back itself when it closes).
                self.holdings.release()

    async def dispatch(self, message: Any) -> None:
        """AsyncConsumer.dispatch without its ``aclose_old_connections()`` before every handler.

        Why: that is a thread hop per message, 16 % of the server's time while 5,000
        streams open (docs/performance.md); ``database_sync_to_async`` already closes
        old connections in the thread around every database call this consumer makes.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}.")
        await handler(message)

    async def http_request(self, message: HTTPRequestEvent) -> None:
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
                raise MethodNotAllowed(
                    f"{method} is not allowed on a stream; subscribe with GET.", allow="GET, HEAD, OPTIONS"
                )
            request = parse_stream_request(self.scope)
            self.check_streams_per_ip()
            await self.take_shared_stream_slot()
            authorized = admit_from_directory(request)
            if authorized is None:
                authorized = await admit_from_database(request)
                get_relay().directory.remember(authorized.rows)
            await self.join_feeds(authorized)
        except PushsiteError as error:
            await self.send_error(error)
            raise StopConsumer() from None
        except DatabaseError:
            logger.exception("Database error while opening a stream.")
            await self.send_error(ServiceUnavailable("The database is not available; retry shortly."))
            raise StopConsumer() from None
        await self.open_stream(authorized, request.format)
        if self._detached:
            # The stream owns the connection now; nothing more comes through ASGI.
            raise StopConsumer()

    def check_streams_per_ip(self) -> None:
        """Take one of this address's stream slots, or refuse; the slot is held until the consumer ends.

        The check and the count are one synchronous step (issue 13): a burst of
        connects from one address cannot all pass the check while the first ones are
        still being authorised, which is what happened when the count came later.
        """
        relay = get_relay()
        if relay.draining:
            raise ServiceUnavailable("This server is shutting down; reconnect to reach another one.")
        limit = conf.MAX_STREAMS_PER_IP
        address = client_address(self.scope)
        if relay.streams_per_ip[address] >= limit:
            raise RateLimited(
                f"This address already holds {limit} open streams on this server; close some first."
            )
        self.holdings.take_slot(address)

    async def take_shared_stream_slot(self) -> None:
        """The same cap across every server process, when they share Redis (events/access/stream_slots.py)."""
        address = self.holdings.address
        assert address is not None
        limit = conf.MAX_STREAMS_PER_IP
        allowed, self.holdings.lease = await stream_slots.take(address, limit)
        if not allowed:
            raise RateLimited(
                f"This address already holds {limit} open streams on this site's servers; close some first."
            )

    async def join_feeds(self, authorized: Authorized) -> None:
        """Join the channels' groups before answering, so a layer outage is a quick 503."""
        relay = get_relay()
        if all(relay.feed_is_open(channel.id) for channel in authorized.channels):
            return  # nothing to wait for (the common case): no timeout to arm
        try:
            async with asyncio.timeout(conf.LAYER_TIMEOUT_SECONDS):
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
        # Errors hold no secrets, and a widget on another site must be able
        # to read why it was refused (no credentials are ever allowed).
        await send_error(self.send, error, headers=[("Access-Control-Allow-Origin", "*")])

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
        # Below ASGI where the server offers it (SSE only: NDJSON rewrites every frame in send).
        direct = (
            claim_direct_writer(self.scope, high_water=max(1, conf.MAX_BACKLOG_BYTES // 4))
            if output == SSE_FORMAT and self.scope["method"] != "HEAD"
            else None
        )

        closer = DetachedClose(self.holdings) if direct is not None else None
        stream = Stream(
            channels=authorized.channels,
            positions=dict(authorized.positions),
            asgi_send=asgi_send if direct is None else None,
            on_close=self._on_stream_closed if closer is None else closer,
            expires_at=authorized.expires_at,
            access=authorized.access,
            resets=authorized.resets,
            direct=direct,
        )
        self.stream = stream
        if direct is not None and closer is not None:
            closer.stream = stream
            self._detached = True
            direct.on_lost(closer.client_left)
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
                retry_milliseconds=conf.RETRY_MILLISECONDS,
                titles=authorized.titles,
                history=authorized.history,
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
        self.holdings.attach(authorized.attachments)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Stream opened: %s from %s",
                ",".join(c.slug for c in authorized.channels),
                client_address(self.scope),
            )

    async def http_disconnect(self, message: HTTPDisconnectEvent) -> None:
        self._client_gone = True
        if self.stream is not None:
            self.stream.close("client disconnected")
        raise StopConsumer()

    def _on_stream_closed(self, reason: str) -> None:
        assert self.stream is not None
        stream = self.stream
        stream_ended(stream, self.holdings, reason)
        if self._client_gone:
            return
        # Ended by the server: say why and finish the response if the socket
        # takes it, then stop this consumer (there is no ASGI message to wait for).
        stream.finish(frames.close_fields(reason))
        self._ended_by_server = True
        if self._task is not None:
            self._task.cancel()


def stream_ended(stream: Stream, holdings: Holdings, reason: str) -> None:
    """What every stream's end does, once, on either path: leave the feeds, give back what it held."""
    get_relay().unsubscribe(stream)
    holdings.release()
    stats.connections -= 1
    if logger.isEnabledFor(logging.INFO):
        logger.info("Stream closed (%s): %s", reason, ",".join(c.slug for c in stream.channels))


class DetachedClose:
    """The close of a stream that owns its connection: no consumer is left to do it."""

    __slots__ = ("holdings", "stream")

    def __init__(self, holdings: Holdings) -> None:
        self.holdings = holdings
        self.stream: Stream | None = None

    def client_left(self) -> None:
        if self.stream is not None:
            self.stream.close("client disconnected")

    def __call__(self, reason: str) -> None:
        stream, self.stream = self.stream, None  # once; and no reference cycle is left
        if stream is None:
            return
        stream_ended(stream, self.holdings, reason)
        # Says why and ends the response if the client is still there (aborts a full socket).
        stream.finish(frames.close_fields(reason))
