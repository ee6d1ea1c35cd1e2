"""Streaming publish: ``POST /api/channels/<slug>/stream`` publishes each line of the body as it arrives.

Django's ASGI handler reads a whole request body before calling a view, so this
is a Channels consumer: each ``http.request`` message (a chunk of the body) is
parsed at once and every complete line is published before the next chunk is
read. Its kept parts are stored in chunks of their own, each while the next parts
are read (StreamPublication.aqueue, issue 17). The body is NDJSON (one ``{"event", "data"}`` per line) or
``text/event-stream``; the parts and the end event are events/publish/stream_publication.py's.

Only API keys are accepted here. Browsers cannot stream a request body over
HTTP/1.1, so a staff session (which would need a manual CSRF check on this
path) gains nothing; sessions publish through ``POST .../messages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import sync_to_async
from asgiref.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPDisconnectEvent,
    HTTPRequestEvent,
)
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.db import DatabaseError

from events.access import ratelimit
from events.access.auth import bearer_secret, key_for_publishing, key_publisher
from events.conf import conf
from events.deliver.consumer import NO_CHANNEL_LAYER
from events.deliver.holdings import Holdings
from events.exceptions import (
    ChannelNotFound,
    InternalError,
    MethodNotAllowed,
    NotAuthenticated,
    PushsiteError,
    RequestTimeout,
    ServiceUnavailable,
)
from events.http.address import client_address
from events.http.asgi import RoutedHTTPScope, request_headers
from events.http.hosts import check_host
from events.http.responses import send_error
from events.models import ApiKey, Channel, Message
from events.publish import body_lines as lines
from events.publish import idempotency
from events.publish.stream_publication import DONE, FAILED, StreamPublication
from events.wire import frames

logger = logging.getLogger(__name__)

# Messages this consumer gives itself (see __call__), dispatched like ASGI ones.
START_MESSAGE_TYPE = "pushsite.stream.start"
IDLE_MESSAGE_TYPE = "pushsite.stream.idle"
SHUTDOWN_GRACE_SECONDS = 2.0


STREAM_NEEDS = (
    "Streaming publish needs 'Authorization: Bearer <api key>'; "
    "a staff session can publish single messages with POST .../messages."
)


def authorize_publisher(authorization: str | None, slug: str) -> tuple[Channel, str, ApiKey]:
    """The channel, the publisher's name and its key (runs in a worker thread).

    A key already over its publish rate is refused here, before anything is stored;
    each part then counts as one publish (:meth:`StreamPublishConsumer._publish`).
    """
    key, channel = key_for_publishing(authorization, slug, missing=STREAM_NEEDS)
    ratelimit.check(ratelimit.PUBLISH_BY_KEY, key.prefix)
    return channel, key_publisher(key), key


class StreamPublishConsumer(AsyncHttpConsumer):  # type: ignore[misc]  # channels ships no type hints
    """One streamed publish: authorise at once, then one part per complete line, then the end."""

    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publication: StreamPublication | None = None
        self.parser: lines.BodyParser | None = None
        self.pace = lines.IdlePace()
        self.key_prefix = ""
        self.key_checked = 0.0  # when the key was last checked in full (time.monotonic)
        # With an Idempotency-Key: the running stream's hold on it, or the replay
        # of the stream that already ended with it (events/publish/idempotency.py).
        self.claim: idempotency.StreamClaim | None = None
        self.replaying: idempotency.StreamReplay | None = None
        # One of the address's open-stream slots (PUSHSITE_MAX_STREAMS_PER_IP), as a subscription holds.
        self.holdings = Holdings()

    async def __call__(
        self, scope: RoutedHTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        idle = conf.STREAM_IDLE_SECONDS
        started = False

        async def receive_or_idle() -> ASGIReceiveEvent | dict[str, Any]:
            # The first message authorises before any body arrives (a client
            # waiting for "100 Continue" gets its 401 at once); after that, a
            # body that stops arriving becomes an idle message.
            nonlocal started
            if not started:
                started = True
                return {"type": START_MESSAGE_TYPE}
            try:
                async with asyncio.timeout(idle):
                    message: ASGIReceiveEvent = await receive()
                    return message
            except TimeoutError:
                return {"type": IDLE_MESSAGE_TYPE, "seconds": idle}

        try:
            await super().__call__(scope, receive_or_idle, send)
        except asyncio.CancelledError:
            # The server is stopping and gave up waiting for this request.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE_SECONDS):
                    await self._end_quietly("The server shut down mid-stream.")
            raise
        finally:
            self.holdings.release()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # why: Channels' dispatch first hops to the one shared sync thread to close old
        # database connections, before every message; a body arrives in hundreds of
        # chunks, and each hop queued behind the site's views (issue 13: a body of line
        # breaks held up other requests by tens of milliseconds). Every database call
        # here goes through database_sync_to_async, which closes them itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- handlers, named after the message types ------------------------------------------

    async def pushsite_stream_start(self, message: dict[str, Any]) -> None:
        await self._guard(self._start())

    async def http_request(self, message: HTTPRequestEvent) -> None:
        body, more = message.get("body", b""), bool(message.get("more_body"))
        if self.replaying is not None:
            await self._guard(self._replay(body, more=more))
            return
        if self.claim is not None:
            await self._guard(self._hold(body))
        await self._guard(self._chunk(body, more=more))

    async def pushsite_stream_idle(self, message: dict[str, Any]) -> None:
        await self._fail(
            RequestTimeout(f"No data arrived for {message['seconds']:g} s; the stream is closed.")
        )

    async def http_disconnect(self, message: HTTPDisconnectEvent) -> None:
        await self._end_quietly("The publisher disconnected mid-stream.")
        raise StopConsumer()

    # --- the work ---------------------------------------------------------------------------

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except PushsiteError as error:
            await self._fail(error)
        except DatabaseError:
            logger.exception("Database error during a streamed publish.")
            await self._fail(ServiceUnavailable("The database is not available; the stream is closed."))
        except StopConsumer:
            raise
        except Exception:
            # A bug, not the publisher's input: subscribers still get the failed end.
            logger.exception("Unexpected error during a streamed publish.")
            await self._fail(InternalError("The stream failed inside Pushsite; it is closed."))

    async def _start(self) -> None:
        headers = request_headers(self.scope)
        check_host(headers, self.scope.get("server"), self.scope.get("scheme"))
        if self.scope["method"] != "POST":
            raise MethodNotAllowed(f"{self.scope['method']} is not allowed here; use POST.", allow="POST")
        authorization = headers.get("authorization")
        if bearer_secret(authorization) is None:
            raise NotAuthenticated(STREAM_NEEDS)  # before the body's format, and without the database
        # Held open like a subscription, so counted with them: before the database is asked.
        self.holdings.take_slot(client_address(self.scope))
        await self.holdings.take_shared_slot()
        self.parser = lines.body_parser(headers.get("content-type"), max_line_bytes=conf.MAX_MESSAGE_BYTES)
        slug = self.scope["url_route"]["kwargs"]["slug"]
        channel, publisher, key = await database_sync_to_async(authorize_publisher)(authorization, slug)
        self.key_prefix = key.prefix
        self.key_checked = time.monotonic()
        claim = idempotency.claim(headers.get(idempotency.ASGI_NAME), idempotency.key_scope(self.key_prefix))
        if claim is not None:
            held = await database_sync_to_async(idempotency.claim_stream)(
                claim, channel, headers.get("content-type")
            )
            if isinstance(held, idempotency.StreamReplay):
                self.replaying = held  # read the body, store nothing
                return
            self.claim = held
        self.publication = StreamPublication(channel, publisher=publisher, key_id=key.pk)
        self.publication.settle = self._settle
        logger.info(
            "Stream %s started on %s by %s from %s",
            self.publication.id,
            slug,
            publisher,
            client_address(self.scope),
        )

    async def _chunk(self, body: bytes, *, more: bool) -> None:
        assert self.parser is not None
        assert self.publication is not None
        step = self.parser.slice_bytes
        try:
            for offset in range(0, len(body), step):
                piece = body[offset : offset + step]
                for part in self.pace.read(self.parser.feed(piece), len(piece)):
                    await self._publish(part)
                # A turn for other requests after each slice, and a pause once the body's
                # bytes that publish nothing outrun their pace (issue 13).
                await asyncio.sleep(self.pace.wait)
            if not more:
                for part in self.parser.close():
                    await self._publish(part)
        except Exception:
            # The parts before the one refused are stored first, as they were when each
            # part was stored before the next was read; a chunk of them that fails is
            # the earlier failure, and answers instead.
            await self._flush()
            raise
        # Every part of this piece of the body stored and sent before the next is
        # awaited: a slow publisher's parts are never held back.
        await self._flush()
        if more:
            return
        if self.publication.fold:
            await self._check_key()  # the whole stream is stored now, in its end event
        await self.publication.aend(DONE)
        logger.info("Stream %s done: %s parts", self.publication.id, self.publication.parts)
        await self._send_json(201, self.publication.summary())
        raise StopConsumer()

    async def _publish(self, part: lines.Part) -> None:
        """One part: counted against the key's publish rate (429 past it), then queued.

        Kept parts are stored in chunks, each while the next parts are read
        (StreamPublication.aqueue); the key's authority is checked in each chunk's
        storing statement.
        """
        assert self.publication is not None
        # From the process's reserved block on the loop; a thread only to reserve the next one.
        if not ratelimit.count_held(ratelimit.PUBLISH_BY_KEY, self.key_prefix):
            await sync_to_async(ratelimit.count, thread_sensitive=False)(
                ratelimit.PUBLISH_BY_KEY, self.key_prefix
            )
        if self.publication.fold and time.monotonic() - self.key_checked >= conf.REVOCATION_SECONDS:
            # A fold channel's parts are live-only: no storing statement checks the key.
            await self._check_key()
        await self._refused_by_key(self.publication.aqueue(part.data, event=part.event))

    async def _flush(self) -> None:
        """Every part queued so far stored and sent (or the refusal or failure of the first that was not)."""
        assert self.publication is not None
        await self._refused_by_key(self.publication.aflush())

    async def _refused_by_key(self, storing: Awaitable[None]) -> None:
        try:
            await storing
        except ChannelNotFound:
            # The key was revoked or narrowed, or the channel switched off, since the
            # stream began: the full check says which (401, 403, 404).
            await self._check_key()
            raise

    async def _check_key(self) -> None:
        """The publisher's key, checked in full again (401, 403, 404)."""
        authorization = request_headers(self.scope).get("authorization")
        slug = self.scope["url_route"]["kwargs"]["slug"]
        await database_sync_to_async(key_for_publishing)(authorization, slug, missing=STREAM_NEEDS)
        self.key_checked = time.monotonic()

    async def _hold(self, body: bytes) -> None:
        """The Idempotency-Key's part of a chunk: into the body's fingerprint; renew the lease when due."""
        assert self.claim is not None
        self.claim.digest.feed(body)
        if self.claim.renewal_due():
            await database_sync_to_async(self.claim.renew)()

    def _settle(self, end: Message) -> None:
        """In the end event's transaction: a done stream keeps its key's summary, a failed one frees the key."""
        if self.claim is None or self.publication is None:
            return
        done = self.publication.status == DONE
        summary = {**self.publication.summary(), "end_id": end.sequence} if done else None
        self.claim.settle(summary, end)

    async def _replay(self, body: bytes, *, more: bool) -> None:
        """A retry of a stream that ended: compare its body, then answer the first summary again."""
        assert self.replaying is not None
        self.replaying.feed(body)
        if more:
            return
        replay = self.replaying.answer()
        await self._send_json(
            replay.status, replay.body, headers=[(idempotency.REPLAYED_HEADER.lower().encode(), b"true")]
        )
        raise StopConsumer()

    async def _fail(self, error: PushsiteError) -> None:
        """Tell subscribers (the failed end event) and the publisher (the error), then stop."""
        await self._end_quietly(error.detail)
        summary = self.publication.summary() if self.publication is not None else {}
        await send_error(self.send, error, extra=summary)
        raise StopConsumer()

    async def _end_quietly(self, reason: str) -> None:
        """End the stream as failed, if it started and has not ended; log (not raise) what goes wrong."""
        publication = self.publication
        if publication is None or publication.status is not None:
            return
        logger.info("Stream %s failed after %s parts: %s", publication.id, publication.parts, reason)
        try:
            await publication.aend(FAILED, reason)
        except Exception:
            # The channel was switched off, or the database is down: the end
            # event cannot be stored; subscribers see no more parts.
            publication.status = FAILED
            logger.exception("Could not publish the failed end of stream %s.", publication.id)

    async def _send_json(
        self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        content = frames.dumps(body).encode()
        await self.send_response(
            status,
            content,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(content)),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        )
