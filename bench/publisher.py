"""The publisher: one keep-alive HTTP/1.1 connection POSTing benchmark messages.

Each message's payload is ``{"p": phase, "n": number, "t": time.time_ns()}``, the
time taken just before the request is written, so subscribers on the same host
measure end-to-end latency (publish request to delivery) with the same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class PublishError(Exception):
    """The server did not answer 201 to a publish."""


@dataclass
class PublishLog:
    """Round trips of the publishes of one phase, in nanoseconds."""

    round_trips_ns: list[int] = field(default_factory=list)
    started_ns: int = 0
    finished_ns: int = 0


class Publisher:
    def __init__(
        self, host: str, port: int, slug: str, api_key: str = "", headers: dict[str, str] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.slug = slug
        self.api_key = api_key
        self.extra_headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    def _request(self, body: bytes) -> bytes:
        auth = f"Authorization: Bearer {self.api_key}\r\n" if self.api_key else ""
        return (
            f"POST /api/channels/{self.slug}/messages HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n{auth}{self.extra_headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def publish(self, phase: int, number: int, *, padding: str = "") -> tuple[dict[str, object], int]:
        """POST one message; the stored message's JSON and the round trip in ns."""
        if self._writer is None:
            await self.connect()
        try:
            return await self._publish(phase, number, padding)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            # The server closed the idle keep-alive connection (uvicorn does after
            # 5 s) before reading the request: nothing was published; send again.
            await self.close()
            await self.connect()
            return await self._publish(phase, number, padding)

    async def _publish(self, phase: int, number: int, padding: str) -> tuple[dict[str, object], int]:
        assert self._reader is not None
        assert self._writer is not None
        sent = time.time_ns()
        data: dict[str, object] = {"p": phase, "n": number, "t": sent}
        if padding:
            data["x"] = padding
        body = json.dumps({"event": "bench", "data": data}).encode()
        self._writer.write(self._request(body))
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        answer = await self._read_chunked() if chunked else await self._reader.readexactly(length)
        round_trip = time.time_ns() - sent
        if b" 201 " not in head[: head.find(b"\r\n") + 1]:
            raise PublishError(f"{head.splitlines()[0].decode()}: {answer[:200].decode(errors='replace')}")
        if b"connection: close" in head.lower():
            await self.close()
        return json.loads(answer), round_trip

    async def _read_chunked(self) -> bytes:
        """A body without Content-Length (Django's handler without CommonMiddleware sends one so)."""
        assert self._reader is not None
        chunks: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append((await self._reader.readexactly(size + 2))[:size])
            if size == 0:
                return b"".join(chunks)

    async def burst(self, phase: int, count: int) -> PublishLog:
        """``count`` messages, each sent as soon as the previous one was answered."""
        log = PublishLog(started_ns=time.time_ns())
        for number in range(1, count + 1):
            _, round_trip = await self.publish(phase, number)
            log.round_trips_ns.append(round_trip)
        log.finished_ns = time.time_ns()
        return log

    async def paced(
        self, phase: int, count: int, rate: float, on_sent: Callable[[int], None] | None = None
    ) -> PublishLog:
        """``count`` messages at ``rate`` per second (on a fixed schedule, not drifting)."""
        log = PublishLog(started_ns=time.time_ns())
        start = time.perf_counter()
        for number in range(1, count + 1):
            delay = start + (number - 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            _, round_trip = await self.publish(phase, number)
            log.round_trips_ns.append(round_trip)
            if on_sent is not None:
                on_sent(number)
        log.finished_ns = time.time_ns()
        return log


async def paced_concurrently(options: argparse.Namespace, connections: int) -> PublishLog:
    """``count`` messages at ``rate`` on a fixed schedule, over ``connections`` keep-alive connections.

    For a rate one connection cannot reach when each answer takes longer than
    1/rate. Publishes overlap, so the order messages are stored in (their ids)
    may differ from their numbers: subscribers see that as "reordered" numbers.
    """
    key = os.environ.get("BENCH_API_KEY", "")
    publishers = [Publisher("127.0.0.1", options.port, options.slug, key) for _ in range(connections)]
    log = PublishLog(started_ns=time.time_ns())
    start = time.perf_counter()
    numbers = iter(range(1, options.count + 1))

    async def worker(publisher: Publisher) -> None:
        await publisher.connect()
        for number in numbers:
            delay = start + (number - 1) / options.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            _, round_trip = await publisher.publish(options.phase, number)
            log.round_trips_ns.append(round_trip)

    try:
        await asyncio.gather(*(worker(publisher) for publisher in publishers))
    finally:
        for publisher in publishers:
            await publisher.close()
    log.finished_ns = time.time_ns()
    return log


async def _run(options: argparse.Namespace) -> PublishLog:
    if options.rate > 0 and options.connections > 1:
        return await paced_concurrently(options, options.connections)
    publisher = Publisher("127.0.0.1", options.port, options.slug, os.environ.get("BENCH_API_KEY", ""))
    try:
        await publisher.connect()
        if options.rate > 0:
            return await publisher.paced(options.phase, options.count, options.rate)
        return await publisher.burst(options.phase, options.count)
    finally:
        await publisher.close()


def main() -> None:
    """Publish from a process of its own, so subscriber work never delays a send."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slug", required=True)
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 for a burst")
    parser.add_argument(
        "--connections", type=int, default=1, help="paced only: publish over this many connections"
    )
    options = parser.parse_args()
    log = asyncio.run(_run(options))
    json.dump(dataclasses.asdict(log), sys.stdout)


if __name__ == "__main__":
    main()
