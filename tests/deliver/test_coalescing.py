"""Frames written to one stream within one loop turn leave as one write, on both write paths."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asgiref.typing import ASGISendEvent
from django.test import override_settings

from events.deliver.stream import Stream, StreamChannel


class Recorder:
    """An ASGI send whose socket always takes the body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def send(self, message: ASGISendEvent) -> None:
        assert message["type"] == "http.response.body"
        self.bodies.append(message["body"])


class Connection:
    """A direct writer (events/deliver/direct.py) with a socket that can be told to stop taking data."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.taken = 0
        self.stalled = False
        self.aborted = False
        self.finished = False
        self.lost_callback: Callable[[], None] | None = None

    def write(self, data: bytes) -> bool:
        self.writes.append(data)
        if not self.stalled:
            self.taken += len(data)
        return not self.aborted

    def buffered(self) -> int:
        return sum(map(len, self.writes)) - self.taken

    @property
    def paused(self) -> bool:
        return self.stalled

    def paused_since(self) -> float | None:
        return 0.0 if self.stalled else None

    async def drain(self) -> None:
        raise AssertionError("not awaited in these tests")

    def abort(self) -> None:
        self.aborted = True

    def finish(self, last_words: bytes = b"") -> bool:
        if self.stalled:
            self.abort()
            return False
        self.writes.append(last_words)
        self.finished = True
        return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        self.lost_callback = callback


def make_stream(recorder: Recorder, connection: Connection | None = None) -> tuple[Stream, list[str]]:
    reasons: list[str] = []
    stream = Stream(
        channels=[StreamChannel(id=1, slug="news")],
        positions={1: 0},
        asgi_send=recorder.send,
        on_close=reasons.append,
        direct=connection,
    )
    return stream, reasons


async def one_turn() -> None:
    await asyncio.sleep(0)


async def test_frames_of_one_turn_leave_in_one_asgi_send() -> None:
    recorder = Recorder()
    stream, _ = make_stream(recorder)
    for sequence in (1, 2, 3):
        stream.deliver(1, sequence, b"data: x\n\n", b"id: %d\ndata: x\n\n" % sequence)
    assert recorder.bodies == []  # not before the turn ends
    await one_turn()
    assert recorder.bodies == [b"id: 1\ndata: x\n\nid: 2\ndata: x\n\nid: 3\ndata: x\n\n"]
    stream.deliver(1, 4, b"data: x\n\n", b"id: 4\ndata: x\n\n")
    await one_turn()
    assert recorder.bodies[1:] == [b"id: 4\ndata: x\n\n"]


async def test_frames_of_one_turn_leave_in_one_direct_write() -> None:
    recorder, connection = Recorder(), Connection()
    stream, _ = make_stream(recorder, connection)
    for sequence in (1, 2):
        stream.deliver(1, sequence, b"data: y\n\n", b"id: %d\ndata: y\n\n" % sequence)
    await one_turn()
    assert connection.writes == [b"id: 1\ndata: y\n\nid: 2\ndata: y\n\n"]
    assert recorder.bodies == []  # nothing through ASGI send


@override_settings(PUSHSITE={"MAX_BACKLOG_BYTES": 1000})
async def test_a_direct_reader_over_the_bound_is_evicted_and_aborted() -> None:
    recorder, connection = Recorder(), Connection()
    stream, reasons = make_stream(recorder, connection)
    connection.stalled = True
    for sequence in range(1, 5):
        stream.deliver(1, sequence, b"", b"x" * 400)
        await one_turn()
    assert reasons == ["slow reader: backlog over limit"]
    assert stream.closed
    assert stream.finish(b"bye") is False
    assert connection.aborted
    assert recorder.bodies == []  # no graceful end queued behind what the reader never took


@override_settings(PUSHSITE={"MAX_BACKLOG_BYTES": 1000})
async def test_a_reader_that_keeps_up_is_not_evicted_for_a_turn_bigger_than_the_bound() -> None:
    recorder = Recorder()
    stream, reasons = make_stream(recorder)
    for sequence in range(1, 41):  # 4,000 bytes in one turn, four times the bound
        stream.deliver(1, sequence, b"", b"y" * 100)
    await one_turn()
    assert reasons == []
    assert b"".join(recorder.bodies) == b"y" * 4000
    assert len(recorder.bodies) == 14  # still coalesced: parts of 300 bytes, just past the low-water mark
