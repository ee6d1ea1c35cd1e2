"""Pushsite's uvicorn protocol: httptools, plus streams that own their connection.

uvicorn's httptools protocol, with one addition: every request's scope offers
the ``pushsite.transport`` extension (events/deliver/direct.py). A stream
starts its response here (``start``: the head, encoded once per distinct head,
leaves with the first frame in one write) or, after sending the head through
ASGI, claims the connection (``claim``): either way the transport gets a
:class:`DetachedConnection` as its protocol, uvicorn's request cycle is marked
complete, and the ASGI task ends while the stream lives. From then on
the stream writes chunked frames to the transport itself (no ``send``
coroutine, message dict or header-middleware call per frame), and hears of the
client leaving from ``connection_lost`` instead of ``http.disconnect``. An idle
stream then costs a transport, a :class:`DetachedConnection` and its
``Stream``; uvicorn's protocol, parser, cycle, scope, the ASGI task and the
endpoint's per-request object are released (docs/performance.md, issue 16).

``manage.py serve`` uses it unless ``--portable``; any other server leaves the
extension out and streams use plain ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import httptools
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import is_ssl

from events.conf import conf
from events.deliver.direct import DIRECT_WRITES
from events.http.responses import ErrorReply, error_reply

# struct linger {l_onoff = 1, l_linger = 0}: close() sends a reset and drops unsent data.
LINGER_ZERO = struct.pack("ii", 1, 0)
# The chunked response's terminator (the stream's response is chunked: checked at claim).
LAST_CHUNK = b"0\r\n\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n\r\n"
Headers = tuple[tuple[bytes, bytes], ...]


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 body chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class _LastChunk:
    """The bytes object last framed as a chunk, and its chunk.

    Why: a fan-out hands every stream of a channel the same bytes object in one loop
    turn (events/deliver/relay.py ``Feed._dispatch``), so it is framed once per frame,
    not once per stream (issue 16). Compared by identity: an equal object built
    elsewhere is framed again, which is only slower. One entry per process: it keeps
    the last frame written alive until the next.
    """

    __slots__ = ("chunk", "data")

    def __init__(self) -> None:
        self.data = b""
        self.chunk = chunk(b"")


_last = _LastChunk()


@functools.lru_cache(maxsize=256)
def encoded_headers(headers: Headers) -> bytes | None:
    """``headers`` as the lines of a response head, once per distinct head; None if one is invalid.

    The checks and the lowering are uvicorn's own (its ``send``), done once instead of per response.
    """
    lines = []
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return None
        lines.append(b"%s: %s\r\n" % (name.lower(), value))
    return b"".join(lines)


class DetachedConnection(asyncio.Protocol):
    """A connection whose chunked response a stream owns to its end: its transport's protocol after the claim.

    Implements events.deliver.direct.DirectWriter. It reads, and ignores, whatever the
    client sends after its request (an SSE client sends nothing): reading is what
    makes the loop notice the client leaving.
    """

    __slots__ = ("_head", "_lost", "_on_lost", "_paused_since", "_transport", "_writable", "paused")

    def __init__(self, transport: asyncio.Transport, *, paused: bool, head: bytes = b"") -> None:
        self._transport = transport
        # A response head not written yet (``start``): it goes out with the first chunk, one write.
        self._head = head
        self._lost = False
        self._on_lost: Callable[[], None] | None = None
        # When the buffer last went above the high-water mark; None while below it.
        self._paused_since: float | None = time.monotonic() if paused else None
        # DirectWriter.paused, as a plain attribute: a stream reads it after every write.
        self.paused = paused
        # Made when a writer first waits for the buffer to drain (most streams never do).
        self._writable: asyncio.Event | None = None

    # --- the stream's side (DirectWriter) ------------------------------------------

    def write(self, data: bytes) -> bool:
        if self._lost or self._transport.is_closing():
            return False
        last = _last
        if data is not last.data:
            last.chunk = chunk(data)
            last.data = data
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head + last.chunk)
        else:
            self._transport.write(last.chunk)
        return True

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def paused_since(self) -> float | None:
        return self._paused_since

    async def drain(self) -> None:
        if self._paused_since is None or self._lost:
            return
        if self._writable is None:
            self._writable = asyncio.Event()
        await self._writable.wait()

    def abort(self) -> None:
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Why: abort() only drops the transport's buffer; closing the socket would
            # still leave the kernel's send buffer (megabytes) draining to a client that
            # does not read. Linger zero makes the close a reset (issue 15).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        self._transport.abort()

    def finish(self, last_words: bytes = b"") -> bool:
        if self._lost or self._transport.is_closing():
            return False
        if self._paused_since is not None:
            # A full socket is aborted, not closed behind unread data (issue 15).
            self.abort()
            return False
        head, self._head = self._head, b""
        self._transport.write(head + (chunk(last_words) if last_words else b"") + LAST_CHUNK)
        # No keep-alive after a stream: the connection ends with it.
        self._transport.close()
        return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        if self._lost:
            callback()
        else:
            self._on_lost = callback

    # --- the transport's side (asyncio.Protocol) ------------------------------------

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None  # the client closed its side: close ours (connection_lost follows)

    def pause_writing(self) -> None:
        self._paused_since = time.monotonic()
        self.paused = True

    def resume_writing(self) -> None:
        self._paused_since = None
        self.paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._paused_since = None
        self.paused = False
        self._wake()
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()

    def _wake(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None:
            writable.set()


def local_address(transport: asyncio.BaseTransport) -> tuple[str, int | None] | None:
    """``get_local_addr``'s answer (the scope's ``server``), from the transport's own ``sockname``.

    uvicorn asks the transport for its socket and the socket for its name: under
    uvloop that builds a Python socket object around the descriptor per call (and
    one more for the peer). ``sockname`` and ``peername`` come without it. The same
    values: an IP address and port (an IPv6 address's flow and scope left out), a
    Unix socket's path with no port (tests/test_protocol.py compares them).
    """
    info = transport.get_extra_info("sockname")
    if isinstance(info, tuple):
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None


def remote_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """``get_remote_addr``'s answer (the scope's ``client``: the per-address stream limits count it)."""
    info = transport.get_extra_info("peername")
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) else None


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request's head passed a bound (answered 431)."""


def refusal_bytes(reply: ErrorReply, default_headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``reply`` as a whole HTTP/1.1 response that closes the connection (the parser's state is lost)."""
    content = [STATUS_LINE[reply.status]]
    content += [b"%s: %s\r\n" % (name, value) for name, value in default_headers]
    content += [b"%s: %s\r\n" % (name.lower().encode(), value.encode()) for name, value in reply.headers]
    content += [b"content-length: %d\r\nconnection: close\r\n\r\n" % len(reply.body), reply.body]
    return b"".join(content)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with each request's head bounded (``serve --portable`` runs it as is).

    httptools bounds neither the size nor the number of a request's headers: a client
    could send megabytes of them, each held by the parser, the scope and Django's request.
    Past ``PUSHSITE_MAX_HEADER_BYTES`` (the request line and header lines) or
    ``PUSHSITE_MAX_HEADERS`` (header lines) the answer is a JSON 431 and the connection
    closes, before any application sees the request. Two counts: the request line and the
    completed header lines of the request being parsed (exact, checked in the parser's
    callbacks), and the bytes received while a head is unfinished (a header without an end
    is buffered by httptools itself, and no callback runs until it ends). uvicorn's own 400
    for what the parser refuses is in the contract's JSON shape too.
    """

    # Bytes received since the current head began (or since the last head ended), while unfinished.
    _head_received = 0
    # The request line and header lines of the current request, counted as the callbacks see them.
    _head_size = 0
    _reading_head = True
    _head_refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = conf.MAX_HEADER_BYTES
        self.max_headers = conf.MAX_HEADERS

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received`` (0.54), with the head's bounds: a JSON 431 past either."""
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._head_refused:
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Read before the parser could check: a head still unfinished past the bound.
        if self._reading_head and self._head_received > self.max_head_bytes:
            self._refuse_head()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request the parser refuses, in the contract's JSON shape."""
        reply = error_reply(400, "bad_request", f"{msg} It is not valid HTTP/1.1.")
        self.transport.write(refusal_bytes(reply, self.server_state.default_headers))
        self.transport.close()

    def _refuse_head(self) -> None:
        reply = error_reply(
            431,
            "headers_too_large",
            f"The request's line and headers may take at most {self.max_head_bytes} bytes"
            f" in at most {self.max_headers} header lines.",
        )
        self.transport.write(refusal_bytes(reply, self.server_state.default_headers))
        self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_head_bytes:
            self._head_refused = True
            raise HeadTooLarge
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Each line as it is sent: "name: value\r\n".
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head_bytes or len(self.headers) >= self.max_headers:
            self._head_refused = True
            raise HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_received = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # What follows is the next request's head.
        self._reading_head = True
        self._head_received = 0
        super().on_message_complete()

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()


class PushsiteHttpProtocol(BoundedHttpProtocol):
    """The bounded httptools protocol offering streams the ``pushsite.transport`` extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's ``connection_made`` (0.54), with the addresses read without a socket object per call."""
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = local_address(transport)
        self.client = remote_address(transport)
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: Any = self.scope
        scope["extensions"] = {
            DIRECT_WRITES: {
                "claim": partial(self._claim, scope),
                "start": partial(self._start, scope),
                "respond": partial(self._respond, scope),
            }
        }

    def _unanswered(self, scope: object) -> RequestResponseCycle | None:
        """The cycle of ``scope`` when Pushsite may answer it here, below ASGI ``send``.

        The one rule ``respond`` and ``start`` share: the current request's cycle (not
        a pipelined successor's), nothing of its response sent yet, the client still
        there, no access line to log (uvicorn's ``send`` writes it), keep-alive (a
        closing connection is uvicorn's to close) and a transport still open.
        """
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or cycle.response_started
            or cycle.disconnected
            or cycle.access_log
            or not cycle.keep_alive
            or self.transport.is_closing()
        ):
            return None
        return cycle

    def _respond(
        self, scope: object, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> bool:
        """Write a whole response, head and body in one write; False (nothing written) when ASGI ``send`` must.

        What uvicorn's ``send`` writes for ``http.response.start`` and one
        ``http.response.body`` (its default headers, its header checks, the cycle
        completed and the next pipelined request started), in one ``transport.write``
        instead of two (issue 17: the JSON publish's 201). Only for a response with
        exactly one ``content-length`` (that of ``body``), to anything but HEAD, on a
        keep-alive connection whose cycle logs no access line and whose writes are not
        paused; anything else goes through ``send`` as before.
        """
        cycle = self._unanswered(scope)
        if (
            cycle is None
            or cycle.scope["method"] == "HEAD"
            or status not in STATUS_LINE
            or self.flow.write_paused
        ):
            return False
        defaults = encoded_headers(tuple(cycle.default_headers))
        if defaults is None:
            return False
        content = [STATUS_LINE[status], defaults]
        lengths = 0
        for name, value in headers:
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                return False
            name = name.lower()
            if name == b"content-length":
                if value != b"%d" % len(body):
                    return False
                lengths += 1
            elif name in (b"transfer-encoding", b"connection"):
                return False  # uvicorn's send reads these: left to it
            content.append(b"%s: %s\r\n" % (name, value))
        if lengths != 1:
            return False
        content += (b"\r\n", body)
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = False
        cycle.expected_content_length = 0
        self.transport.write(b"".join(content))
        cycle.response_complete = True
        cycle.message_event.set()
        cycle.on_response()
        return True

    def _start(
        self, scope: object, status: int, headers: Headers, *, high_water: int
    ) -> DetachedConnection | None:
        """Start the response here and hand it over at once: the head leaves with the first chunk.

        What uvicorn's ``send`` would write for this head (its default headers, chunked
        framing), without its per-response header checks (done once per head) or a
        write of its own. Only a fresh HTTP/1.1 GET on a keep-alive connection whose
        cycle logs no access line; otherwise None, and the caller sends the head
        through ASGI and claims the connection after.
        """
        cycle = self._unanswered(scope)
        if (
            cycle is None
            or cycle.scope["method"] != "GET"
            or cycle.scope["http_version"] != "1.1"
            or status not in STATUS_LINE
            or self.pipeline
        ):
            return None
        own = encoded_headers(headers)
        defaults = encoded_headers(tuple(cycle.default_headers))
        if own is None or defaults is None:
            return None
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = True
        return self._detach(high_water, head=b"".join((STATUS_LINE[status], defaults, own, CHUNKED)))

    def _claim(self, scope: object, *, high_water: int) -> DetachedConnection | None:
        cycle = self.cycle
        # Only the response this scope belongs to (not a pipelined successor), once its
        # head is out, while it is open, and only when uvicorn frames it as chunks.
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or not cycle.chunked_encoding
            or self.transport.is_closing()
            or self.pipeline
        ):
            return None
        return self._detach(high_water)

    def _detach(self, high_water: int, head: bytes = b"") -> DetachedConnection:
        cycle = self.cycle
        transport = self.transport
        connection = DetachedConnection(transport, paused=self.flow.write_paused, head=head)
        # uvicorn is done with this response: its task may end without closing the
        # connection ("returned without completing response"), a late receive() says
        # http.disconnect, and a graceful shutdown neither waits for nor closes it
        # (the relay ends streams on SIGTERM itself, events/runtime/shutdown.py).
        cycle.response_complete = True
        cycle.keep_alive = False
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        transport.set_protocol(connection)
        # The stream paces replay and judges readers by this mark (events/deliver/stream.py).
        transport.set_write_buffer_limits(high=high_water, low=high_water // 2)
        # Reading (and discarding) is how a closed connection is noticed.
        self.flow.resume_reading()
        # This protocol keeps nothing of the stream's: drop the request's state now.
        self.cycle = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        self.headers = None  # type: ignore[assignment]
        # The parser and this protocol refer to each other: without this they wait for
        # the cyclic GC, which runs rarer as opens allocate less (measured: 0.4 of the
        # streams' old protocols still held 2 s after 2,000 opens).
        self.parser = None  # type: ignore[assignment]
        return connection
