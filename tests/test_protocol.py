"""pushsite/protocol.py: the connection a detached stream owns.

Unit level, plus the raw bytes of stream answers compared between ``manage.py serve``
and ``serve --portable`` (the streams themselves are tested on both in tests/deliver).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import uvloop
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from pushsite.protocol import DetachedConnection, encoded_headers, local_address, remote_address
from tests.support.servers import ServerProcess


class Transport:
    """The part of an asyncio transport a DetachedConnection uses."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.buffer = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def get_extra_info(self, name: str) -> Any:
        return None


def connection(paused: bool = False) -> tuple[DetachedConnection, Transport]:
    transport = Transport()
    return DetachedConnection(transport, paused=paused), transport  # type: ignore[arg-type]


def test_writes_are_chunks_and_finish_ends_the_response_and_closes() -> None:
    conn, transport = connection()
    assert conn.write(b"data: x\n\n")
    assert conn.finish(b"event: pushsite.close\n\n")
    assert transport.written == [b"9\r\ndata: x\n\n\r\n", b"17\r\nevent: pushsite.close\n\n\r\n0\r\n\r\n"]
    assert transport.closing
    assert not transport.aborted
    assert not conn.write(b"late")  # nothing after the end


def test_one_frame_written_to_many_connections_is_chunked_right_for_each() -> None:
    """The chunk of the last frame is kept and reused for the same bytes object (issue 16)."""
    frame, other = b"id: 1\ndata: a\n\n", b"id: 2\ndata: bb\n\n"
    connections = [connection() for _ in range(3)]
    for conn, _ in connections:
        assert conn.write(frame)
    connections[1][0].write(other)
    connections[2][0].write(bytes(bytearray(frame)))  # equal, but another object
    connections[0][0].write(frame)
    assert [t.written for _, t in connections] == [
        [b"f\r\nid: 1\ndata: a\n\n\r\n"] * 2,
        [b"f\r\nid: 1\ndata: a\n\n\r\n", b"10\r\nid: 2\ndata: bb\n\n\r\n"],
        [b"f\r\nid: 1\ndata: a\n\n\r\n", b"f\r\nid: 1\ndata: a\n\n\r\n"],
    ]


def test_paused_follows_the_transport() -> None:
    conn, _ = connection()
    assert not conn.paused
    conn.pause_writing()
    assert conn.paused
    assert conn.paused_since() is not None
    conn.resume_writing()
    assert not conn.paused
    assert conn.paused_since() is None
    conn.pause_writing()
    conn.connection_lost(None)
    assert not conn.paused


def test_a_full_socket_is_aborted_not_finished() -> None:
    conn, transport = connection(paused=True)
    assert conn.paused
    assert conn.paused_since() is not None
    assert not conn.finish(b"bye")
    assert transport.aborted
    assert transport.written == []


def test_losing_the_connection_calls_back_once_and_stops_writes() -> None:
    conn, transport = connection()
    calls: list[str] = []
    conn.on_lost(lambda: calls.append("lost"))
    conn.data_received(b"GET / HTTP/1.1\r\n\r\n")  # ignored: the response is the stream's
    assert transport.written == []
    conn.connection_lost(None)
    conn.connection_lost(None)
    assert calls == ["lost"]
    assert not conn.write(b"x")
    assert not conn.finish()
    conn.on_lost(lambda: calls.append("late"))  # registered after the loss: called at once
    assert calls == ["lost", "late"]


async def test_drain_waits_for_resume_and_for_loss() -> None:
    conn, _ = connection()
    await asyncio.wait_for(conn.drain(), 1)  # not paused: returns at once
    conn.pause_writing()
    waiters = [asyncio.create_task(conn.drain()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    conn.resume_writing()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    conn.pause_writing()
    waiter = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    conn.connection_lost(ConnectionResetError())
    await asyncio.wait_for(waiter, 1)
    assert not conn.paused


def test_a_started_response_head_leaves_with_the_first_chunk() -> None:
    transport = Transport()
    conn = DetachedConnection(transport, paused=False, head=b"HTTP/1.1 200 OK\r\n\r\n")  # type: ignore[arg-type]
    assert conn.write(b"data: x\n\n")
    assert conn.write(b"data: y\n\n")
    assert transport.written == [b"HTTP/1.1 200 OK\r\n\r\n9\r\ndata: x\n\n\r\n", b"9\r\ndata: y\n\n\r\n"]


def test_a_started_response_that_ends_at_once_still_sends_its_head() -> None:
    transport = Transport()
    conn = DetachedConnection(transport, paused=False, head=b"HTTP/1.1 200 OK\r\n\r\n")  # type: ignore[arg-type]
    assert conn.finish()
    assert transport.written == [b"HTTP/1.1 200 OK\r\n\r\n0\r\n\r\n"]


def test_encoded_headers_are_uvicorns_lines_or_none_for_an_invalid_one() -> None:
    assert encoded_headers(((b"Content-Type", b"text/event-stream"), (b"vary", b"Origin"))) == (
        b"content-type: text/event-stream\r\nvary: Origin\r\n"
    )
    assert encoded_headers(((b"x-evil", b"a\r\nset-cookie: x"),)) is None
    assert encoded_headers(((b"bad name", b"x"),)) is None


def test_the_addresses_are_uvicorns_on_every_kind_of_socket(tmp_path: Path) -> None:
    """The scope's ``server`` and ``client`` (the per-address limits count the client) as uvicorn gives them."""
    seen: list[tuple[object, ...]] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(
                (
                    local_address(transport),
                    get_local_addr(transport),  # type: ignore[arg-type]
                    remote_address(transport),
                    get_remote_addr(transport),  # type: ignore[arg-type]
                )
            )
            transport.close()

    async def connect_to_each() -> None:
        loop = asyncio.get_running_loop()
        for host in ("127.0.0.1", "::1"):
            try:
                server = await loop.create_server(Probe, host, 0)
            except OSError:  # no IPv6 here
                continue
            port = server.sockets[0].getsockname()[1]
            reader, _writer = await asyncio.open_connection(host, port)
            await reader.read()
            server.close()
        path = str(tmp_path / "socket")
        unix_server = await loop.create_unix_server(Probe, path)
        reader, _writer = await asyncio.open_unix_connection(path)
        await reader.read()
        unix_server.close()

    uvloop.run(connect_to_each())
    assert len(seen) >= 2  # IPv4 and the Unix socket at least
    assert seen[0][0] == ("127.0.0.1", seen[0][1][1])  # type: ignore[index]
    for ours, uvicorns, our_client, uvicorns_client in seen:
        assert ours == uvicorns
        assert our_client == uvicorns_client


DATE = re.compile(rb"\r\ndate: [^\r]*")

# Raw requests to the stream URLs, each answered and closed: errors, HEAD, a body, a
# malformed request, pipelined requests (the second must not be answered by the stream).
RAW_REQUESTS = {
    "unknown channel": b"GET /events/no-such-channel/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "no channel": b"GET /events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "bad cursor": (
        b"GET /events/partner-feed/ HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: nonsense\r\n"
        b"Connection: close\r\n\r\n"
    ),
    "bad host": b"GET /events/partner-feed/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    "private": b"GET /events/private-room/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "head": b"HEAD /events/partner-feed/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "head http/1.0": b"HEAD /events/partner-feed/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    "post": b"POST /events/partner-feed/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "with a body": (
        b"GET /events/no-such-channel/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nabc"
    ),
    "malformed header": b"GET /events/partner-feed/ HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
    "malformed after a stream request": (
        b"GET /events/no-such-channel/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGARBAGE\r\n\r\n"
    ),
    "pipelined": (
        b"GET /events/no-such-channel/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"HEAD /events/partner-feed/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ),
}


async def raw_answer(process: ServerProcess, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return DATE.sub(b"", await reader.read(-1))
    finally:
        writer.close()


@pytest.mark.parametrize("name", list(RAW_REQUESTS))
async def test_stream_answers_are_byte_for_byte_those_of_the_portable_path(
    name: str, server: ServerProcess, portable_server: ServerProcess
) -> None:
    direct = await raw_answer(server, RAW_REQUESTS[name])
    portable = await raw_answer(portable_server, RAW_REQUESTS[name])
    assert direct == portable
    assert direct.startswith(b"HTTP/1.")


async def answer_to(process: ServerProcess, request: bytes) -> bytes:
    """What the server writes back before it closes, the request written whole (or as far as it reads it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    try:
        async with asyncio.timeout(10):
            writer.write(request)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            answer = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    answer += chunk
            return answer
    finally:
        writer.close()


HEAD_LIMIT = 65536
OVERSIZED_HEADS = {
    # Each was read whole and handed to the application (Django copied every header into META).
    "one huge header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "many small headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-%d: 1\r\n" % n for n in range(101))
    + b"\r\n",
    "a header never ended": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2_000_000,
    "a huge URL": b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "a publish's head": b"POST /api/channels/pool-0/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer psk_x_y\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    + b"Cookie: "
    + b"c" * 70_000
    + b"\r\n\r\n{}",
    "a stream's head": b"GET /events/pool-0/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"Accept: text/event-stream\r\n" for _ in range(200))
    + b"\r\n",
}


@pytest.mark.parametrize("name", list(OVERSIZED_HEADS))
@pytest.mark.parametrize("which", ["server", "portable_server"])
async def test_an_oversized_request_head_is_a_json_431_on_both_protocols(
    name: str, which: str, request: pytest.FixtureRequest
) -> None:
    process: ServerProcess = request.getfixturevalue(which)
    answer = await answer_to(process, OVERSIZED_HEADS[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"content-type: application/json" in head
    assert b"connection: close" in head
    assert json.loads(body) == {
        "error": "headers_too_large",
        "detail": f"The request's line and headers may take at most {HEAD_LIMIT} bytes in at most 100 header lines.",
    }


async def test_a_head_within_the_bounds_is_served_and_a_big_body_is_no_head(server: ServerProcess) -> None:
    within = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + b"".join(b"X-%d: %b\r\n" % (n, b"v" * 500) for n in range(90))
        + b"\r\n"
    )
    assert (await answer_to(server, within)).startswith(b"HTTP/1.1 200 ")
    # A body is not the head: 200 KB sent with its head in one write is still read as a body.
    body = b"x" * 200_000
    post = (
        b"POST /api/channels/pool-0/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer psk_x_y\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (len(body), body)
    )
    assert not (await answer_to(server, post)).startswith(b"HTTP/1.1 431 ")


async def test_what_the_parser_refuses_is_a_json_400(
    server: ServerProcess, portable_server: ServerProcess
) -> None:
    for process in (server, portable_server):
        answer = await answer_to(process, b"GET /\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert json.loads(body)["error"] == "bad_request"
