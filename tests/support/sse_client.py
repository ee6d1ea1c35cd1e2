"""An asyncio SSE subscriber for tests: real HTTP, decoded with events.wire.sse.Decoder."""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from contextlib import AsyncExitStack
from typing import Any

import httpx

from events.wire.sse import Decoder, ServerSentEvent


class Subscriber:
    """One open stream. ``async with Subscriber(url) as sub: await sub.events(3)``."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"Accept": "text/event-stream", **(headers or {})}
        self.decoder = Decoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.response: httpx.Response | None = None
        self.raw = bytearray()
        self._pending: list[ServerSentEvent] = []
        self.open_event: ServerSentEvent | None = None
        self._stack = AsyncExitStack()
        self._chunks: Any = None

    async def __aenter__(self) -> Subscriber:
        client = await self._stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        )
        self.response = await self._stack.enter_async_context(
            client.stream("GET", self.url, headers=self.headers)
        )
        self._chunks = self.response.aiter_raw()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._stack.aclose()

    @property
    def status(self) -> int:
        assert self.response is not None
        return self.response.status_code

    async def _read_more(self) -> bool:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return False
        self.raw.extend(chunk)
        for event in self.decoder.feed(self._utf8.decode(chunk)):
            # The open event is the server's "subscribed"; tests wait for it
            # with opened() and otherwise read only what follows it.
            if event.event == "pushsite.open" and self.open_event is None:
                self.open_event = event
            else:
                self._pending.append(event)
        return True

    async def opened(self, timeout: float = 5.0) -> ServerSentEvent:
        """Wait until the server says the stream is subscribed (its pushsite.open event)."""
        async with asyncio.timeout(timeout):
            while self.open_event is None:
                if not await self._read_more():
                    raise EOFError("the server ended the stream before it opened")
        return self.open_event

    async def next_event(self, timeout: float = 5.0) -> ServerSentEvent:
        async with asyncio.timeout(timeout):
            while not self._pending:
                if not await self._read_more():
                    raise EOFError("the server ended the stream")
        return self._pending.pop(0)

    async def events(self, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        """The next ``count`` events, within ``timeout`` seconds in all."""
        received: list[ServerSentEvent] = []
        async with asyncio.timeout(timeout):
            while len(received) < count:
                received.append(await self.next_event(timeout))
        return received

    async def until_closed(self, timeout: float = 10.0) -> list[ServerSentEvent]:
        """Every event until the server ends the stream."""
        received: list[ServerSentEvent] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    received.append(await self.next_event(timeout))
                except EOFError:
                    return received

    async def wait_for_bytes(self, needle: bytes, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.raw:
                if not await self._read_more():
                    raise EOFError(f"stream ended before {needle!r}")

    async def body(self) -> Any:
        """For error responses: the JSON body."""
        assert self.response is not None
        return json.loads(await self.response.aread())


def sequence_of(event_id: str) -> int:
    """The sequence number in a single-channel stream's id (``42~3fa9c0b1`` -> 42)."""
    return int(event_id.split("~", 1)[0])


def without_epochs(cursor: str) -> str:
    """A stream id with its epochs left out (``news:4~ab,scores:7~cd`` -> ``news:4,scores:7``)."""
    return re.sub(r"~[0-9a-z]+", "", cursor)


def ids(events: list[ServerSentEvent]) -> list[int]:
    """The message ids (sequence numbers) inside the envelopes."""
    return [json.loads(event.data)["id"] for event in events]


async def follow(
    urls: list[str],
    *,
    expect: int,
    timeout: float,
    connected: asyncio.Event | None = None,
) -> list[int]:
    """Like a browser: stay subscribed, and on any failure reconnect to the next URL with Last-Event-ID.

    Returns the message ids received, in order, once ``expect`` have arrived.
    """
    received: list[int] = []
    last_event_id = ""
    attempt = 0
    async with asyncio.timeout(timeout):
        while len(received) < expect:
            url = urls[attempt % len(urls)]
            attempt += 1
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with Subscriber(url, headers=headers) as subscriber:
                    if subscriber.status != 200:
                        raise ConnectionError(f"{url}: {subscriber.status}")
                    await subscriber.opened(timeout)
                    if connected is not None:
                        connected.set()
                    while len(received) < expect:
                        event = await subscriber.next_event(timeout)
                        last_event_id = subscriber.decoder.last_event_id
                        if event.event != "message":
                            continue
                        received.append(json.loads(event.data)["id"])
            except (EOFError, ConnectionError, httpx.HTTPError):
                await asyncio.sleep(0.2)  # a browser's retry delay
    return received
