"""The SSE stream endpoint: ``GET /events/<slug>/`` and ``GET /events/?channel=a&channel=b``.

A plain ASGI application, not a Channels consumer: pushsite/asgi.py sends the
stream URLs here (``stream_route`` in events/routing.py) before Channels'
routers and Django. Per request it makes one small :class:`StreamConnection`
(no consumer, router scope copy or weak-value registry entry), and the
response head is built once per shape (format, allowed origin, the security
headers the site adds) and reused (issue 16: opens per second). What a
subscriber asked for and whether it may have it is decided in
events/deliver/consumer.py (``parse_stream_request``, ``admit_from_directory``,
``authorize``); this module admits, opens, and ends the stream.

Where the server offers it (``manage.py serve``, events/deliver/direct.py) the
open stream owns its connection and this request's task ends; on every other
server (daphne, ``runserver``, ``serve --portable``) the task stays, waiting
for ``http.disconnect``, and the stream writes through ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

from asgiref.typing import ASGIReceiveCallable, ASGISendEvent, HTTPResponseStartEvent
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from django.db import DatabaseError
from redis.exceptions import RedisError

from events.conf import conf
from events.deliver.consumer import (
    NDJSON_FORMAT,
    SSE_FORMAT,
    Authorized,
    admit_from_database,
    admit_from_directory,
    authorize_origin,
    ndjson_send,
    parse_stream_request,
)
from events.deliver.direct import claim_direct_writer, start_direct_response
from events.deliver.holdings import Holdings
from events.deliver.relay import get_relay
from events.deliver.stream import AsgiSend, Stream
from events.exceptions import (
    MethodNotAllowed,
    PayloadTooLarge,
    PushsiteError,
    RequestTimeout,
    ServiceUnavailable,
)
from events.http.address import client_address
from events.http.asgi import RoutedHTTPScope, request_headers
from events.http.bodies import receive_body_part
from events.http.responses import send_error
from events.metrics import stats
from events.wire import frames, ndjson, sse

logger = logging.getLogger(__name__)

Headers = tuple[tuple[bytes, bytes], ...]
# What the site adds to every response head (pushsite/headers.py ``complete_head``):
# (scope, the endpoint's own headers) -> the whole head. Returns the same tuple for the
# same head, so it can be built once per shape.
CompleteHead = Callable[[RoutedHTTPScope, Headers], Headers]

# Errors hold no secrets, and a widget on another site must be able to read why it
# was refused (no credentials are ever allowed).
ERROR_HEADERS = (("Access-Control-Allow-Origin", "*"),)
PREFLIGHT_HEADERS: Headers = (
    (b"access-control-allow-methods", b"GET"),
    (b"access-control-allow-headers", b"Last-Event-ID, Accept"),
    (b"access-control-max-age", b"600"),
)


def as_is(scope: RoutedHTTPScope, headers: Headers) -> Headers:
    """A head with nothing added (the endpoint outside the site's application, as tests drive it)."""
    return headers


@functools.lru_cache(maxsize=256)
def stream_head(content_type: str, allow_origin: str | None) -> Headers:
    """An open stream's own headers: one tuple per (format, allowed origin), built once.

    Bounded: an origin is only allowed when a channel lists it (``check_origin``).
    """
    headers: Headers = (
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-content-type-options", b"nosniff"),
        (b"vary", b"Origin, Accept"),
    )
    if allow_origin is not None:
        headers += ((b"access-control-allow-origin", allow_origin.encode()),)
    return headers


@functools.lru_cache(maxsize=1024)
def opening(
    slugs: tuple[str, ...],
    cursor: str,
    retry_milliseconds: int,
    titles: tuple[tuple[str, str], ...] | None,
    history: bool,
) -> bytes:
    """A stream's first bytes (``frames.open_frame``), encoded once for the streams that open alike.

    Readers of the same channels between two publishes get the very same bytes.
    """
    return frames.open_frame(
        list(slugs),
        cursor=cursor,
        retry_milliseconds=retry_milliseconds,
        titles=dict(titles) if titles is not None else None,
        history=history,
    )


class EventStreamEndpoint:
    """The ASGI application of the stream URLs: one per process, one :class:`StreamConnection` per request."""

    __slots__ = ("complete_head",)

    def __init__(self, complete_head: CompleteHead = as_is) -> None:
        self.complete_head = complete_head

    async def __call__(self, scope: RoutedHTTPScope, receive: ASGIReceiveCallable, send: AsgiSend) -> None:
        await StreamConnection(scope, send, self.complete_head).run(receive)


class StreamConnection:
    """One request to a stream URL: refuses it, or serves one SSE (or NDJSON) response for as long as the client stays."""

    __slots__ = (
        "_client_gone",
        "_complete_head",
        "_detached",
        "_ended_by_server",
        "_task",
        "holdings",
        "scope",
        "send",
        "stream",
    )

    def __init__(self, scope: RoutedHTTPScope, send: AsgiSend, complete_head: CompleteHead) -> None:
        self.scope = scope
        self.send = send
        self._complete_head = complete_head
        self.stream: Stream | None = None
        self._task: asyncio.Task[object] | None = None
        self._client_gone = False
        self._ended_by_server = False
        # The stream's slot, lease and attachments; a detached stream takes them along.
        self.holdings = Holdings()
        # True once the stream owns its connection (events/deliver/direct.py): this task ends.
        self._detached = False

    async def run(self, receive: ASGIReceiveCallable) -> None:
        """Answer the request, then (on the portable path) wait for the client to leave."""
        self._task = asyncio.current_task()
        try:
            message = await receive()
            if message["type"] == "http.request" and message.get("more_body"):
                message = await self.skip_body(receive, message)
            if message["type"] != "http.request" or not await self.answer():
                return  # gone before its request ended, refused, or owning its connection now
            # The stream writes through ASGI send: the client leaving is an http.disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            self._client_gone = True
            if self.stream is not None:
                self.stream.close("client disconnected")
        except asyncio.CancelledError:
            if not self._ended_by_server:
                raise
        finally:
            if not self._detached:
                # Refused, failed, ended or cancelled: the slot goes back (a detached
                # stream gives it back itself when it closes).
                self.holdings.release()

    async def skip_body(self, receive: ASGIReceiveCallable, message: Any) -> Any:
        """Skip a body a stream request has no use for, bounded as every body is (408, 413): its last message.

        Unbounded, a GET whose body never ended held its connection for good, before
        any stream slot was taken.
        """
        received = len(message.get("body", b""))
        try:
            while message["type"] == "http.request" and message.get("more_body"):
                message, received = await receive_body_part(receive, received)
        except (RequestTimeout, PayloadTooLarge) as error:
            await self.send_error(error)
            return {"type": "http.disconnect"}
        return message

    async def answer(self) -> bool:
        """Refuse, answer a preflight, or open the stream; True when an open stream needs this task."""
        method = self.scope["method"]
        if method == "OPTIONS":
            await self.answer_preflight()
            return False
        try:
            if method not in {"GET", "HEAD"}:
                raise MethodNotAllowed(
                    f"{method} is not allowed on a stream; subscribe with GET.", allow="GET, HEAD, OPTIONS"
                )
            request = parse_stream_request(self.scope)
            self.holdings.take_slot(client_address(self.scope))
            await self.holdings.take_shared_slot()
            authorized = admit_from_directory(request)
            if authorized is None:
                authorized = await admit_from_database(request)
                get_relay().directory.remember(authorized.rows)
            if method == "HEAD":
                await self.answer_head(authorized, request.format)
                return False
            await self.join_feeds(authorized)
        except PushsiteError as error:
            await self.send_error(error)
            return False
        except DatabaseError:
            logger.exception("Database error while opening a stream.")
            await self.send_error(ServiceUnavailable("The database is not available; retry shortly."))
            return False
        await self.open_stream(authorized, request.format)
        return not self._detached

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
        headers: Headers = ((b"vary", b"Origin"), (b"content-length", b"0"))
        try:
            request = parse_stream_request(self.scope)
            await database_sync_to_async(authorize_origin)(request)
        except (PushsiteError, DatabaseError):
            origin = None
        if origin:
            headers += ((b"access-control-allow-origin", origin.encode()), *PREFLIGHT_HEADERS)
        await self.send_head(204, headers)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def answer_head(self, authorized: Authorized, output: str) -> None:
        """HEAD: the head a GET would get, and no stream.

        A HEAD response has no body, so a stream behind it would hold an address slot
        and a feed for nothing until the client left (a monitor's HEAD probe held
        them for good).
        """
        content_type = ndjson.NDJSON if output == NDJSON_FORMAT else sse.EVENT_STREAM
        head = self._complete_head(self.scope, stream_head(content_type, authorized.allow_origin))
        await self.send_head(200, head, complete=False)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_error(self, error: PushsiteError) -> None:
        await send_error(self._send_completed, error, headers=ERROR_HEADERS)

    async def _send_completed(self, message: dict[str, Any]) -> None:
        """``send``, with the site's headers added to the response head (the rare answers: errors)."""
        if message["type"] == "http.response.start":
            message = {**message, "headers": self._complete_head(self.scope, tuple(message["headers"]))}
        await self.send(cast(ASGISendEvent, message))

    async def send_head(self, status: int, headers: Headers, *, complete: bool = True) -> None:
        """The response head through ASGI, with the site's headers (pushsite/headers.py) unless it has them."""
        head: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": self._complete_head(self.scope, headers) if complete else headers,
            "trailers": False,
        }
        await self.send(head)

    async def open_stream(self, authorized: Authorized, output: str = SSE_FORMAT) -> None:
        # The one place the output format matters: streams write SSE frames,
        # and an NDJSON response rewrites them as they are sent (events/wire/ndjson.py).
        if output == NDJSON_FORMAT:
            content_type, asgi_send = ndjson.NDJSON, ndjson_send(self.send)
        else:
            content_type, asgi_send = sse.EVENT_STREAM, self.send
        head = self._complete_head(self.scope, stream_head(content_type, authorized.allow_origin))
        # Below ASGI where the server offers it (SSE only: NDJSON rewrites every frame in send):
        # the server writes the head with the first frame, or after ASGI sent it.
        direct = None
        below_asgi = output == SSE_FORMAT and self.scope["method"] != "HEAD"
        high_water = max(1, conf.MAX_BACKLOG_BYTES // 4)
        if below_asgi:
            direct = start_direct_response(self.scope, 200, head, high_water=high_water)
        if direct is None:
            await self.send_head(200, head, complete=False)
            if below_asgi:
                direct = claim_direct_writer(self.scope, high_water=high_water)

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
            opening(
                tuple(c.slug for c in authorized.channels),
                stream.cursor(),
                conf.RETRY_MILLISECONDS,
                tuple(authorized.titles.items()) if authorized.titles is not None else None,
                authorized.history,
            )
        )
        relay = get_relay()
        for channel in authorized.channels:
            stream.write_pending_reset(channel)
            if stream.closed:  # the opening write failed, say
                return
            try:
                if relay.can_attach(channel.id):
                    dispatched = relay.attach(stream, channel.id)
                else:
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
            grant = authorized.access.token
            logger.info(
                "Stream opened: %s from %s%s",
                ",".join(c.slug for c in authorized.channels),
                client_address(self.scope),
                # The subject its minter named (mint_token --subject, POST /api/tokens),
                # quoted: a minter's text never forges a log line.
                f" with a token for {grant.subject!r}" if grant is not None and grant.subject else "",
            )

    def _on_stream_closed(self, reason: str) -> None:
        assert self.stream is not None
        stream = self.stream
        stream_ended(stream, self.holdings, reason)
        if self._client_gone:
            return
        # Ended by the server: say why and finish the response if the socket
        # takes it, then end this request's task (there is no ASGI message to wait for).
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
    """The close of a stream that owns its connection: no request task is left to do it."""

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
