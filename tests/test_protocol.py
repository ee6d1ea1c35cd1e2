"""pushsite/protocol.py: the connection a detached stream owns, and the eager start of stream requests.

Unit level, plus the raw bytes of stream answers compared between ``manage.py serve``
and ``serve --portable`` (the streams themselves are tested on both in tests/deliver).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from pushsite.protocol import DetachedConnection, PushsiteHttpProtocol, encoded_headers
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

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


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


class Recorder:
    """An ASGI application that notes each request it is called for and answers 204."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def protocol(app: Recorder) -> tuple[PushsiteHttpProtocol, Transport, ServerState]:
    config = Config(app=app, proxy_headers=False, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    proto = PushsiteHttpProtocol(config=config, server_state=state, app_state={})
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, state


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_stream_request_is_answered_while_its_data_is_received(method: str) -> None:
    app = Recorder()
    proto, transport, state = protocol(app)
    proto.data_received(f"{method} /events/news/ HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    # Answered within data_received: no task, no loop turn.
    assert app.paths == ["/events/news/"]
    assert transport.written[0].startswith(b"HTTP/1.1 204 No Content\r\n")
    assert not state.tasks


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /events/news/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS /events/news/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
async def test_every_other_request_gets_uvicorns_task(request_bytes: bytes) -> None:
    app = Recorder()
    proto, transport, state = protocol(app)
    proto.data_received(request_bytes)
    assert app.paths == []  # the task runs it later
    assert len(state.tasks) == 1
    await asyncio.wait_for(asyncio.gather(*state.tasks), 1)
    assert len(app.paths) == 1
    assert transport.written[0].startswith(b"HTTP/1.1 204 No Content\r\n")


async def test_a_stream_request_still_waiting_for_its_body_goes_on_in_a_task() -> None:
    app = Recorder()
    proto, transport, state = protocol(app)
    proto.data_received(b"GET /events/news/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert app.paths == ["/events/news/"]  # started at once, then waits for the body
    assert len(state.tasks) == 1
    assert transport.written == []
    proto.data_received(b"cd")
    await asyncio.wait_for(asyncio.gather(*state.tasks), 1)
    assert transport.written[0].startswith(b"HTTP/1.1 204 No Content\r\n")


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
