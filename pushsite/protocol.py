"""Pushsite's uvicorn protocol: httptools, plus direct writes for streams.

uvicorn's httptools protocol, with one addition: every request's scope offers
the ``pushsite.transport`` extension (events/deliver/direct.py). A stream that
has sent its response head through ASGI claims the connection and writes
chunked frames to the transport itself: no ``send`` coroutine, message dict or
header-middleware call per frame (docs/performance.md, issue 16). The
response's end still goes through ASGI ``send``.

``manage.py serve`` uses it unless ``--portable``; any other server leaves the
extension out and streams use plain ASGI ``send``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from events.deliver.direct import DIRECT_WRITES

# struct linger {l_onoff = 1, l_linger = 0}: close() sends a reset and drops unsent data.
LINGER_ZERO = struct.pack("ii", 1, 0)


class ConnectionWriter:
    """One started, chunked response on one uvicorn connection, written directly."""

    __slots__ = ("_cycle", "_protocol", "_transport")

    def __init__(self, protocol: PushsiteHttpProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._transport = protocol.transport

    def write(self, data: bytes) -> bool:
        cycle = self._cycle
        if cycle.disconnected or cycle.response_complete or self._transport.is_closing():
            return False
        # The chunk framing uvicorn's send would add (the response is chunked: claim checked).
        self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    @property
    def paused(self) -> bool:
        return self._protocol.flow.write_paused

    def paused_since(self) -> float | None:
        return self._protocol.write_paused_since

    async def drain(self) -> None:
        await self._protocol.flow.drain()

    def abort(self) -> None:
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Why: abort() only drops the transport's buffer; closing the socket would
            # still leave the kernel's send buffer (megabytes) draining to a client that
            # does not read. Linger zero makes the close a reset (issue 15).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        self._transport.abort()


class PushsiteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol offering streams the ``pushsite.transport`` extension."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the transport last paused writing (its buffer above the high-water mark).
        self.write_paused_since: float | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: Any = self.scope
        scope["extensions"] = {DIRECT_WRITES: {"claim": partial(self._claim, scope)}}

    def _claim(self, scope: object, *, high_water: int) -> ConnectionWriter | None:
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
        ):
            return None
        # The stream paces replay and judges readers by this mark (events/deliver/stream.py).
        self.transport.set_write_buffer_limits(high=high_water, low=high_water // 2)
        return ConnectionWriter(self, cycle)

    def pause_writing(self) -> None:
        self.write_paused_since = time.monotonic()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.write_paused_since = None
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.write_paused_since = None
        super().connection_lost(exc)
