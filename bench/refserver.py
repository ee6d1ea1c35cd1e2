"""A minimal raw-asyncio SSE server: the practical limit for Python on this machine.

It speaks just enough HTTP/1.1 for the benchmark, on the same URLs as Pushsite:

* ``GET /events/<slug>/`` opens a stream (``retry:`` hint, an id-only frame, then events);
* ``POST /api/channels/<slug>/messages`` with ``{"event": ..., "data": ...}`` answers
  ``201 {"id": <sequence>, ...}``.

A publish encodes its frame once (the same envelope Pushsite sends) and writes the
bytes to every open socket with ``transport.write``: no framework, no storage, no
task or queue per connection. A reader whose unsent bytes pass ``MAX_BACKLOG`` is
dropped, as Pushsite does, so memory stays bounded. Run it with
``python -m bench.refserver --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
from datetime import UTC, datetime
from typing import cast

logger = logging.getLogger(__name__)

MAX_BACKLOG = 1024 * 1024
MAX_REQUEST = 64 * 1024
_STREAM_PATH = re.compile(rb"^/events/([A-Za-z0-9_.-]+)/$")
_PUBLISH_PATH = re.compile(rb"^/api/channels/([A-Za-z0-9_.-]+)/messages$")
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n\r\n"
    b"retry: 2000\n\n"
)


class Channel:
    """The open streams of one channel and its sequence counter."""

    __slots__ = ("sequence", "slug", "streams")

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.sequence = 0
        self.streams: set[asyncio.Transport] = set()

    def publish(self, event: str, data: object) -> dict[str, object]:
        self.sequence += 1
        envelope = {
            "id": self.sequence,
            "channel": self.slug,
            "event": event,
            "data": data,
            "published_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        line = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (self.sequence, event.encode(), line.encode())
        for transport in tuple(self.streams):
            if transport.get_write_buffer_size() > MAX_BACKLOG:
                self.streams.discard(transport)
                transport.abort()
            else:
                transport.write(frame)
        return envelope


class Registry:
    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}

    def channel(self, slug: str) -> Channel:
        channel = self.channels.get(slug)
        if channel is None:
            channel = self.channels[slug] = Channel(slug)
        return channel


class HttpProtocol(asyncio.Protocol):
    """One client connection: keep-alive requests, or one SSE stream."""

    __slots__ = ("_buffer", "_channel", "_registry", "_transport")

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._channel: Channel | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._channel is not None and self._transport is not None:
            self._channel.streams.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        if self._channel is not None:
            return  # a stream's client has nothing more to say
        self._buffer += data
        while self._transport is not None and self._channel is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_REQUEST:
                    self._transport.close()
                return
            head = self._buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            method, path = head.split(b" ", 2)[:2]
            self._handle(method, path.split(b"?", 1)[0], body)

    def _handle(self, method: bytes, path: bytes, body: bytes) -> None:
        assert self._transport is not None
        stream = _STREAM_PATH.match(path)
        if method == b"GET" and stream:
            channel = self._registry.channel(stream.group(1).decode())
            self._channel = channel
            self._transport.write(_STREAM_HEAD + b"id: %d\n\n" % channel.sequence)
            channel.streams.add(self._transport)
            return
        publish = _PUBLISH_PATH.match(path)
        if method == b"POST" and publish:
            try:
                payload = json.loads(body)
                event = payload.get("event", "message")
                if not isinstance(event, str) or not _EVENT_TYPE.match(event):
                    raise ValueError(event)
                envelope = self._registry.channel(publish.group(1).decode()).publish(event, payload["data"])
            except (ValueError, KeyError, AttributeError):
                self._respond(b"400 Bad Request", b'{"error":"invalid"}')
                return
            self._respond(b"201 Created", json.dumps(envelope).encode())
            return
        if method == b"GET" and path == b"/healthz":
            self._respond(b"200 OK", b'{"status":"ok"}')
            return
        self._respond(b"404 Not Found", b'{"error":"not_found"}')

    def _respond(self, status: bytes, body: bytes) -> None:
        assert self._transport is not None
        self._transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )


async def serve(host: str, port: int) -> None:
    registry = Registry()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(registry), host, port, backlog=4096)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    logger.warning("Reference SSE server on http://%s:%s", host, port)
    async with server:
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(serve(options.host, options.port))
    else:
        asyncio.run(serve(options.host, options.port))


if __name__ == "__main__":
    main()
