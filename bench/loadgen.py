"""The load generator: many SSE subscribers on raw asyncio connections.

Each subscriber is an ``asyncio.Protocol`` (no HTTP library, no task per
connection) so that the client costs less per delivery than any server it
measures; the runner reports its CPU use beside the server's to show it.

Every benchmark message carries ``{"p": phase, "n": number, "t": send time in ns}``
as its payload. A subscriber finds those three numbers in each frame with one
regular expression (any server's framing and JSON spacing), and from them counts
deliveries, duplicates, reordering and loss, and the latency of each delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from array import array
from typing import cast

# "p", "n", "t" in this order, with or without spaces (Python's json.dumps
# default or Pushsite's compact envelope).
PAYLOAD = re.compile(rb'"p": ?(\d+), ?"n": ?(\d+), ?"t": ?(\d+)')
# The first frame that proves the subscription is live: Pushsite and the reference
# server send an id-only frame after subscribing; django-eventstream "stream-open".
READY = re.compile(rb"(?:^|\n)id: |event: stream-open")
_LINGER_RESET = struct.pack("ii", 1, 0)


class Tally:
    """What the subscribers of one phase received, in total."""

    def __init__(self, phase: int, expected: int, *, keep_latencies: bool = True) -> None:
        self.phase = phase
        self.expected = expected
        self.deliveries = 0
        self.duplicates = 0
        self.reordered = 0
        self.stale = 0
        self.keep_latencies = keep_latencies
        self.latencies_ns = array("q")
        self.first_ns = 0
        self.last_ns = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def check_done(self) -> None:
        if self.deliveries >= self.expected and not self.done.done():
            self.done.set_result(None)


class Subscriber(asyncio.Protocol):
    """One SSE connection that tallies benchmark frames as they arrive."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_head",
        "_missing",
        "_phase",
        "_request",
        "error",
        "last",
        "lost_connection",
        "ready",
        "tally",
        "transport",
    )

    def __init__(self, request: bytes, tally: Tally | None) -> None:
        self._request = request
        self.tally = tally
        self._head: bytes | None = b""  # response head until it is complete, then None
        self._buffer = b""
        self._closing = False
        self._phase = -1
        self._missing: set[int] | None = None
        self.last = 0
        self.error = ""
        self.lost_connection = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self.lost_connection = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error or "closed before the stream opened"))

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            data = self._read_head(data)
            if not data:
                return
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buffer = data
            return
        self._buffer = data[end + 2 :]
        if not self.ready.done() and READY.search(data, 0, end + 2):
            self.ready.set_result(None)
        tally = self.tally
        if tally is None:
            return
        found = PAYLOAD.findall(data, 0, end)
        if not found:
            return
        now = time.time_ns()
        if self._phase != tally.phase:
            self._phase, self.last, self._missing = tally.phase, 0, None
        phase = tally.phase
        for p, n, t in found:
            if int(p) != phase:
                tally.stale += 1
                continue
            number = int(n)
            if number == self.last + 1:
                self.last = number
            elif number > self.last:
                if self._missing is None:
                    self._missing = set()
                self._missing.update(range(self.last + 1, number))
                self.last = number
            elif self._missing is not None and number in self._missing:
                self._missing.discard(number)
                tally.reordered += 1
            else:
                tally.duplicates += 1
                continue
            tally.deliveries += 1
            if tally.keep_latencies:
                tally.latencies_ns.append(now - int(t))
        if not tally.first_ns:
            tally.first_ns = now
        tally.last_ns = now
        if tally.deliveries >= tally.expected:
            tally.check_done()

    def _read_head(self, data: bytes) -> bytes:
        assert self._head is not None
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            return b""
        self._head = None
        status = head[: head.find(b"\r\n")]
        if b" 200 " not in status:
            self.error = status.decode(errors="replace")
            self.close()
            return b""
        return head[end + 4 :]

    def missing_count(self, expected_last: int) -> int:
        """Messages numbered up to ``expected_last`` this subscriber never got (this phase)."""
        if self.tally is None or self._phase != self.tally.phase:
            return expected_last
        return len(self._missing or ()) + max(0, expected_last - self.last)

    def close(self) -> None:
        """Close with a reset, so no TIME_WAIT is left to exhaust loopback ports."""
        self._closing = True
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.close()


class Crowd:
    """Many subscribers to one URL, opened with bounded concurrency."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host = host
        self.port = port
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()
        self.subscribers: list[Subscriber] = []
        self.failures: list[str] = []
        # The phase new subscribers count from their first frame (a reconnect storm's replay).
        self.tally: Tally | None = None

    async def open(
        self,
        count: int,
        *,
        concurrency: int = 200,
        timeout: float = 60.0,
        on_progress: object = None,
        receive_buffer: int | None = None,
    ) -> float:
        """Open ``count`` more streams; seconds until every one has its first frame."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one() -> None:
            async with gate:
                subscriber = Subscriber(self.request, self.tally)
                try:
                    async with asyncio.timeout(timeout):
                        if receive_buffer is None:
                            await loop.create_connection(lambda: subscriber, self.host, self.port)
                        else:
                            await self._connect_small(subscriber, receive_buffer)
                        await subscriber.ready
                except (OSError, TimeoutError, ConnectionError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    subscriber.close()
                    return
                self.subscribers.append(subscriber)
                if callable(on_progress):
                    on_progress(len(self.subscribers), count)

        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started

    async def _connect_small(self, subscriber: Subscriber, receive_buffer: int) -> None:
        # A receive buffer set before connecting stays that small (no autotuning),
        # so a client that stops reading backs up into the server quickly.
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (self.host, self.port))
        except OSError:
            sock.close()
            raise
        await loop.create_connection(lambda: subscriber, sock=sock)

    def start_phase(self, tally: Tally) -> None:
        for subscriber in self.subscribers:
            subscriber.tally = tally

    def missing(self, expected_last: int) -> int:
        return sum(subscriber.missing_count(expected_last) for subscriber in self.subscribers)

    def lost_connections(self) -> int:
        return sum(1 for subscriber in self.subscribers if subscriber.lost_connection)

    async def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()
        self.subscribers.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
