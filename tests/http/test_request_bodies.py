"""Request bodies outside the streaming publish: bounded in size and in time, before any view runs.

Django's ASGI handler reads a whole body (spooled to a temporary file) before it calls
a view, so a chunked body (no Content-Length) was read to its end whatever its size,
and one that stopped arriving held its connection for good; the view's 413 came only
after, and a 401 for a request with no credential at all. The streaming publish has
its idle limit (408, PUSHSITE_STREAM_IDLE_SECONDS); every other body now has it too,
and one past Django's DATA_UPLOAD_MAX_MEMORY_SIZE is refused as it arrives (413).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.support.servers import ServerProcess

# The stream endpoint skips a body it has no use for: it skipped one without end (a GET
# whose chunked body never ended held its connection, and no stream slot, for good).
PATHS = [
    "/api/channels/pool-0/messages",
    "/api/tokens",
    "/rooms/no-room/messages",
    "/accounts/login/",
    "/events/pool-0/",
]
IDLE = 2.0  # the test server's PUSHSITE_STREAM_IDLE_SECONDS


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    async with asyncio.timeout(IDLE + 8):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def open_post(
    server: ServerProcess, path: str, headers: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # A stream URL takes GET only, so its body comes with a GET (it has no use for one).
    method = "GET" if path.startswith("/events/") else "POST"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n{headers}\r\n".encode()
    )
    return reader, writer


@pytest.mark.parametrize("path", PATHS)
async def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(
    server: ServerProcess, path: str
) -> None:
    reader, writer = await open_post(server, path, "Transfer-Encoding: chunked\r\n")
    chunk = b"x" * 65536
    try:
        async with asyncio.timeout(10):
            for _ in range(8 * 16):  # 8 MiB, past the 2.5 MB of DATA_UPLOAD_MAX_MEMORY_SIZE
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
    except (ConnectionError, TimeoutError):
        pass  # the server stopped reading: refused
    status, body = await answer(reader)
    writer.transport.abort()
    # Not a 401 (no credential) nor the view's 413 after reading it all: refused unread.
    assert (status, body["error"]) == (413, "too_large")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("framing", ["Transfer-Encoding: chunked\r\n", "Content-Length: 100\r\n"])
async def test_a_body_that_stops_arriving_is_408(server: ServerProcess, path: str, framing: str) -> None:
    reader, writer = await open_post(server, path, "Authorization: Bearer psk_00000000_x\r\n" + framing)
    writer.write(b'5\r\n{"dat\r\n' if "chunked" in framing else b'{"dat')
    await writer.drain()
    started = time.monotonic()
    status, body = await answer(reader)
    writer.transport.abort()
    assert (status, body["error"]) == (408, "timeout")
    assert time.monotonic() - started < IDLE + 3


# receive_body_part on its own: the body already there is taken without a timer, a
# receive that has to wait is timed, and its cancellation reaches the receive.


async def test_a_body_that_has_arrived_is_read_without_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    from events.http import bodies

    def no_timer(delay: float | None) -> asyncio.Timeout:
        raise AssertionError("timed a receive that answered at once")

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    monkeypatch.setattr(asyncio, "timeout", no_timer)  # what bodies.py calls
    message, received = await bodies.receive_body_part(receive, 4)
    assert message == {"type": "http.request", "body": b"abc", "more_body": False}
    assert received == 7


async def test_a_receive_that_waits_gets_what_it_waited_for(settings: Any) -> None:
    from events.http import bodies

    settings.PUSHSITE = {**getattr(settings, "PUSHSITE", {}), "STREAM_IDLE_SECONDS": 5}
    arrived: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    seen: list[bytes] = []

    async def receive() -> dict[str, object]:
        await asyncio.sleep(0)  # a bare yield first
        body = await arrived  # then a future, whose result is sent back in
        seen.append(body)
        return {"type": "http.request", "body": body, "more_body": True}

    asyncio.get_running_loop().call_later(0.01, arrived.set_result, b"late")
    message, received = await asyncio.wait_for(bodies.receive_body_part(receive, 0), timeout=5)
    assert seen == [b"late"]
    assert message == {"type": "http.request", "body": b"late", "more_body": True}
    assert received == 4


async def test_a_receive_that_never_answers_is_408_and_is_cancelled(settings: Any) -> None:
    from events.exceptions import RequestTimeout
    from events.http import bodies

    settings.PUSHSITE = {**getattr(settings, "PUSHSITE", {}), "STREAM_IDLE_SECONDS": 0.05}
    cancelled: list[bool] = []

    async def receive() -> dict[str, object]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        raise AssertionError("unreachable")

    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(bodies.receive_body_part(receive, 0), timeout=5)
    assert cancelled == [True]
    assert time.monotonic() - started < 4
