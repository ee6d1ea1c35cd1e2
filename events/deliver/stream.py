"""One open SSE response: its position in each channel, and bounded writes to it.

A :class:`Stream` receives frames from the relay's feeds (events/deliver/relay.py), in
sequence order per channel. It writes each one exactly once: a frame at or
below its position is a duplicate (the seam between replay and live), and a
frame beyond the next one means it missed something, which it reads back from
the database before going on. Writes never wait: when the client's socket is
full, frames queue up to ``MAX_BACKLOG_BYTES`` and a write that does not finish
within ``SEND_TIMEOUT_SECONDS`` evicts the reader (it resumes with
Last-Event-ID).

History is paced by what the socket takes, never pushed into the backlog:
replay waits whenever the unsent backlog is above a low-water mark (a quarter
of the bound) before writing the next frame, and a frame from the relay's gap
fill that finds the backlog above that mark makes the stream read the rest from
the database itself, at its own pace. So a reader that keeps up receives any
amount of history without eviction; the bound is for readers that do not read.
A read that is the stream's next frames with no gap and fits under the mark with
what the socket has not taken is written whole, as the one bytes object every
stream resuming from that position shares (events/deliver/replay.py), in the read's
callback: no task and no per-frame wait unless the socket makes it wait.

Frames written to one stream within one loop turn go out as one write when the
turn ends (:class:`Coalescer`): a burst costs a connection one syscall, not one
per frame. Where the server offers it (events/deliver/direct.py), the stream
writes straight to the connection's transport instead of through ASGI
``send``, and aborts the socket of a reader it evicts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.typing import ASGISendEvent, HTTPResponseBodyEvent

from events import metrics
from events.access.revocation import Access
from events.conf import conf
from events.deliver import replay
from events.deliver.direct import DirectWriter
from events.deliver.eager import start_eagerly
from events.metrics import stats
from events.runtime.tasks import detached
from events.wire import cursors, frames, sse

logger = logging.getLogger(__name__)

# asgiref's ASGISendCallable, narrowed to what every server's send is (uvicorn's,
# daphne's, Channels'): a coroutine function. Writes drive it eagerly (events/deliver/eager.py).
AsgiSend = Callable[[ASGISendEvent], Coroutine[Any, Any, None]]


class Coalescer:
    """The streams written to in this loop turn; each is flushed once, when the turn ends."""

    __slots__ = ("_dirty", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._dirty: list[Stream] = []

    def add(self, stream: Stream) -> None:
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(stream)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        # One clock read for the turn: every stream's write clock is this turn's.
        now = time.monotonic()
        for stream in dirty:
            stream.flush(now)


_coalescer: Coalescer | None = None


def coalescer() -> Coalescer | None:
    """The running loop's coalescer; None outside a loop (then writes go out at once)."""
    global _coalescer
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    if _coalescer is None or _coalescer.loop is not loop:
        _coalescer = Coalescer(loop)
    return _coalescer


@dataclass(frozen=True, slots=True)
class StreamChannel:
    """A channel as one stream sees it."""

    id: int
    slug: str
    # The channel's incarnation, part of every id (events/wire/cursors.py).
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Reset:
    """Where a client asked to resume in a channel, where it restarts instead, and why."""

    requested: cursors.Position
    resumed_after: int
    reason: str


class Stream:
    """The state of one subscriber connection."""

    __slots__ = (
        "_asgi_send",
        "_backlog",
        "_backlog_bytes",
        "_catch_up_tasks",
        "_coalescer",
        "_direct",
        "_inflight",
        "_inflight_since",
        "_low_water",
        "_max_backlog",
        "_on_close",
        "_pending",
        "_pending_bytes",
        "_unresolved",
        "access",
        "catching_up",
        "channels",
        "closed",
        "expires_at",
        "last_write",
        "positions",
        "wrote_event",
    )

    def __init__(
        self,
        *,
        channels: list[StreamChannel],
        positions: dict[int, int],
        asgi_send: AsgiSend | None,
        on_close: Callable[[str], None],
        expires_at: float | None = None,
        access: Access | None = None,
        resets: dict[int, Reset] | None = None,
        direct: DirectWriter | None = None,
    ) -> None:
        self.channels = channels
        # What let this reader in; re-checked while it stays (events/access/revocation.py).
        self.access = access
        # channel id -> sequence of the last event written (or the start point).
        self.positions = positions
        # channel id -> highest sequence seen live while reading history.
        self.catching_up: dict[int, int] = {}
        self.closed = False
        self.expires_at = expires_at
        self.last_write = time.monotonic()
        self.wrote_event = False
        # None when ``direct`` owns the response (the ASGI task has ended).
        self._asgi_send = asgi_send
        # The connection itself, when the server offers it (events/deliver/direct.py).
        self._direct = direct
        # Written this loop turn, not yet handed on (Coalescer).
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._coalescer: Coalescer | None = None
        self._on_close = on_close
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_since = 0.0
        self._backlog: list[bytes] = []
        self._backlog_bytes = 0
        self._max_backlog = conf.MAX_BACKLOG_BYTES
        self._low_water = self._max_backlog // 4
        # The catch-up's pending read or its task; made by the first catch-up (an empty set
        # is 216 bytes; most streams never read history).
        self._catch_up_tasks: set[asyncio.Future[Any]] | None = None
        # Channels whose pushsite.reset is not written yet: until it is, ids
        # repeat the client's own position there, so a client that leaves
        # before its reset gets the reset again instead of a silent skip.
        self._unresolved: dict[int, Reset] = dict(resets or {})

    # --- frames from the feeds ------------------------------------------------

    def deliver(self, channel_id: int, sequence: int, fields: bytes, single_frame: bytes) -> None:
        """A live frame, in order for this channel. ``single_frame`` already has its id line."""
        if channel_id in self.catching_up:
            if sequence > self.catching_up[channel_id]:
                self.catching_up[channel_id] = sequence
            return
        position = self.positions[channel_id]
        if sequence <= position:
            return
        if sequence != position + 1:
            # Should not happen (feeds are gapless), but heal rather than skip.
            self.catch_up(channel_id, target=sequence)
            return
        self.positions[channel_id] = sequence
        if len(self.channels) == 1:
            self.write(single_frame)
        else:
            self.write(self.encode_id() + fields)
        stats.deliveries += 1

    def deliver_replayed(self, channel_id: int, sequence: int, fields: bytes, single_frame: bytes) -> bool:
        """A frame from the feed's gap fill: taken while the socket keeps up, else read back at this stream's pace.

        False when this stream will read it from the database itself.
        """
        if channel_id not in self.catching_up and self.unsent() > self._low_water:
            # Why: a gap fill after an outage hands every stream a long run of
            # frames at once; queueing them would evict healthy readers en masse.
            self.catch_up(channel_id, target=sequence)
            return False
        self.deliver(channel_id, sequence, fields, single_frame)
        return True

    def deliver_ephemeral(self, fields: bytes) -> None:
        """A live-only event: written without an id line, so positions and Last-Event-ID stay put."""
        self.write(fields)

    def encode_id(self) -> bytes:
        """The ``id:`` line for this stream's current position."""
        return sse.encode_id(self.cursor())

    def cursor(self) -> str:
        """This stream's current id (what the client sends back as Last-Event-ID)."""
        by_slug = {channel.slug: self.positions[channel.id] for channel in self.channels}
        epochs = {channel.slug: channel.epoch for channel in self.channels}
        for channel_id, pending in self._unresolved.items():
            slug = next(channel.slug for channel in self.channels if channel.id == channel_id)
            by_slug[slug] = pending.requested.sequence
            epochs[slug] = pending.requested.epoch or ""
        return cursors.format_cursor(by_slug, [channel.slug for channel in self.channels], epochs)

    # --- history --------------------------------------------------------------

    def catch_up(self, channel_id: int, *, target: int) -> None:
        """Read from the database until this channel reaches ``target`` and goes live."""
        if channel_id in self.catching_up:
            self.catching_up[channel_id] = max(self.catching_up[channel_id], target)
            return
        self.catching_up[channel_id] = target
        self._read_next(next(c for c in self.channels if c.id == channel_id))

    def _read_next(self, channel: StreamChannel) -> None:
        """Ask for the next stored frames; :meth:`_replayed` takes them, without a task of its own."""
        # Batched with the other streams reading now (events/deliver/replay.py): one query per channel.
        read = replay.read_batched(
            channel.id, channel.slug, self.positions[channel.id], conf.REPLAY_BATCH_SIZE
        )
        self._track(read)
        read.add_done_callback(partial(self._replayed, channel))

    def _track(self, waiting: asyncio.Future[Any]) -> None:
        if self._catch_up_tasks is None:
            self._catch_up_tasks = set()
        self._catch_up_tasks.add(waiting)

    def _replayed(self, channel: StreamChannel, read: asyncio.Future[replay.Slice]) -> None:
        """A read's answer: written whole and the next step taken here, or a task if it must wait."""
        self._untrack(read)
        if read.cancelled() or self.closed:
            return
        try:
            piece = read.result()
            written = self._write_whole(channel, piece)
            if written:
                self._reset_if_gone(channel, len(piece))
                self.flush()
                if self.closed:
                    return
                if not self._must_wait():
                    if not self._go_live_if_done(channel, piece.ended_short):
                        self._read_next(channel)
                    return
        except Exception as error:
            self._replay_failed(error)
            return
        # A long history, a gap, several channels, or a socket that is behind: paced, in a task.
        task = detached(self._catch_up(channel, piece, written))
        self._track(task)
        task.add_done_callback(self._catch_up_done)

    def _untrack(self, done: asyncio.Future[Any]) -> None:
        waiting = self._catch_up_tasks
        if waiting is not None:
            waiting.discard(done)
            if not waiting:
                self._catch_up_tasks = None  # caught up: no empty set kept per stream

    def _catch_up_done(self, task: asyncio.Future[None]) -> None:
        self._untrack(task)
        if not task.cancelled() and task.exception() is not None:
            self._replay_failed(task.exception())

    def _replay_failed(self, error: BaseException | None) -> None:
        logger.error("Replaying history failed; closing the stream so the client resumes.", exc_info=error)
        self.close("replay failed")

    async def _catch_up(self, channel: StreamChannel, piece: replay.Slice | None, written: bool) -> None:
        """The catch-up from ``piece`` on (``written``: it was written whole), waiting where it must."""
        channel_id = channel.id
        while not self.closed:
            if piece is None:
                position = self.positions[channel_id]
                piece = await replay.read_batched(channel_id, channel.slug, position, conf.REPLAY_BATCH_SIZE)
                written = False
            # Only the counts are kept past here: the shared run's joined slices are not held while pacing.
            count, ended_short = len(piece), piece.ended_short
            if not written:
                if not self._write_whole(channel, piece):
                    # Frame by frame, each after the socket took enough of the last.
                    stored = piece.frames
                    piece = None
                    for frame in stored:
                        if self.closed:
                            return
                        if frame.sequence != self.positions[channel_id] + 1:
                            self._write_reset(channel, self.positions[channel_id], frame.sequence - 1)
                        self.positions[channel_id] = frame.sequence
                        self.write(self._frame(channel, frame.sequence, frame.fields))
                        stats.replayed += 1
                        metrics.replayed_deliveries[(channel_id, frame.sequence)] += 1
                        await self._paced()
                    del stored
                self._reset_if_gone(channel, count)
            piece = None
            # Wait for the client to take this batch before reading the next:
            # replay of a long history must not pile up in memory.
            await self.drained()
            if self.closed or self._go_live_if_done(channel, ended_short):
                return

    def _write_whole(self, channel: StreamChannel, piece: replay.Slice) -> bool:
        """Write ``piece`` as one shared bytes object if it can be (False: write it frame by frame).

        It can when it is this single-channel stream's next frames, with no gap, and fits
        with what the socket has not taken under the low-water mark (no pacing to do).
        """
        if not piece:
            return True
        channel_id = channel.id
        position = self.positions[channel_id]
        if len(self.channels) != 1 or not piece.gapless_after(position):
            return False
        if self.unsent() + piece.size(channel.epoch) > self._low_water:
            return False
        self.write(piece.joined(channel.epoch))
        last = piece.last_sequence
        self.positions[channel_id] = last
        stats.replayed += last - position
        piece.delivered()
        return True

    def _reset_if_gone(self, channel: StreamChannel, count: int) -> None:
        """After a read of ``count`` frames: a reset if it found none but newer frames were seen live."""
        if not count and self.positions[channel.id] < self.catching_up[channel.id]:
            # Frames were seen live but their rows are gone (pruned or
            # deleted meanwhile): say so and move on rather than spin.
            self._write_reset(channel, self.positions[channel.id], self.catching_up[channel.id])

    def _go_live_if_done(self, channel: StreamChannel, ended_short: bool) -> bool:
        """Live from here when the last read ended short and nothing newer was seen live meanwhile."""
        if ended_short and self.positions[channel.id] >= self.catching_up[channel.id]:
            # Checked and cleared in one step, with no await in between, so
            # no live frame can slip between the last read and going live.
            del self.catching_up[channel.id]
            return True
        return False

    def _must_wait(self) -> bool:
        """True while what was written is not all handed to the socket (what :meth:`drained` waits out)."""
        if self._direct is not None:
            return self._direct.paused
        return self._inflight is not None

    def _frame(self, channel: StreamChannel, sequence: int, fields: bytes) -> bytes:
        if len(self.channels) == 1:
            return b"id: %d" % sequence + cursors.id_suffix(channel.epoch) + fields
        return self.encode_id() + fields

    def _write_reset(
        self, channel: StreamChannel, requested_after: int, resumed_after: int, reason: str | None = None
    ) -> None:
        stats.resets += 1
        self.positions[channel.id] = resumed_after
        fields = frames.reset_fields(
            slug=channel.slug,
            requested_after=requested_after,
            resumed_after=resumed_after,
            reason=reason or ("history-expired" if resumed_after > requested_after else "unknown-position"),
        )
        self.write(self._frame(channel, resumed_after, fields))

    def write_pending_reset(self, channel: StreamChannel) -> None:
        """The client's position means nothing here (beyond the end, another epoch): say so, restart."""
        reset = self._unresolved.pop(channel.id, None)
        if reset is not None:
            self._write_reset(channel, reset.requested.sequence, reset.resumed_after, reset.reason)

    # --- writing ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client without waiting; evict the reader if it cannot keep up.

        It goes out when this loop turn ends, in one write with anything else
        written to this stream meanwhile (sooner past the low-water mark).
        """
        if self.closed:
            return
        flush_now = False
        if not self._pending:
            turn = self._coalescer
            if turn is None:
                turn = self._coalescer = coalescer()
            if turn is not None:
                turn.add(self)
            else:
                flush_now = True
        self._pending.append(data)
        self._pending_bytes += len(data)
        if flush_now or self._pending_bytes > self._low_water:
            # A turn that writes a lot goes out in parts: the bound applies to what
            # the socket has not taken (flush), never to a healthy reader's big turn.
            self.flush()

    def unsent(self) -> int:
        """Bytes written to this stream that the socket has not taken yet."""
        buffered = self._direct.buffered() if self._direct is not None else self._backlog_bytes
        return self._pending_bytes + buffered

    def flush(self, now: float | None = None) -> None:
        """Hand what this loop turn wrote to the connection, as one write (``now``: the turn's clock)."""
        if not self._pending or self.closed:
            return
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_bytes = 0
        direct = self._direct
        if direct is None:
            self._send(data)
            return
        # The direct write, inline: this runs once per stream per frame in a fan-out.
        self.last_write = time.monotonic() if now is None else now
        if not direct.write(data):
            self.close("write failed")
        elif direct.paused and direct.buffered() > self._max_backlog:
            # Only a paused writer can be over the bound: unpaused, its buffer is at most
            # its high-water mark, this stream's low-water mark (claimed with it).
            stats.slow_reader_evictions += 1
            self.close("slow reader: backlog over limit")

    def _send(self, data: bytes) -> None:
        if self._inflight is not None:
            self._backlog.append(data)
            self._backlog_bytes += len(data)
            if self._backlog_bytes > self._max_backlog:
                stats.slow_reader_evictions += 1
                self.close("slow reader: backlog over limit")
            return
        self.last_write = time.monotonic()
        assert self._asgi_send is not None, "a stream without a direct writer has a send"
        message: HTTPResponseBodyEvent = {"type": "http.response.body", "body": data, "more_body": True}
        try:
            pending = start_eagerly(self._asgi_send(message))
        except Exception as exc:  # the server refused the write: the client is gone
            logger.debug("Write failed: %s", exc)
            self.close("write failed")
            return
        if pending is not None:
            self._inflight = pending
            self._inflight_since = self.last_write
            pending.add_done_callback(self._write_done)

    def _write_done(self, future: asyncio.Future[None]) -> None:
        self._inflight = None
        if future.cancelled() or future.exception() is not None:
            self.close("write failed")
            return
        if self._backlog:
            data = b"".join(self._backlog)
            self._backlog.clear()
            self._backlog_bytes = 0
            self._send(data)

    async def _paced(self) -> None:
        """Wait while the unsent backlog is above the low-water mark: the socket sets the pace."""
        if self._pending_bytes > self._low_water:
            self.flush()
        direct = self._direct
        if direct is not None:
            # The writer pauses above the low-water mark (claimed with it as its high water).
            while direct.paused and not self.closed:
                await direct.drain()
            return
        while self._inflight is not None and self._backlog_bytes > self._low_water and not self.closed:
            await asyncio.wait([self._inflight])

    async def drained(self) -> None:
        """Wait until everything written so far has been handed to the socket."""
        self.flush()
        direct = self._direct
        if direct is not None:
            while direct.paused and not self.closed:
                await direct.drain()
            return
        while self._inflight is not None and not self.closed:
            await asyncio.wait([self._inflight])

    def tick(self, now: float, heartbeat: float, send_timeout: float, wall_clock: float) -> None:
        """Housekeeping, once a second: keep-alives, stuck writes, token expiry."""
        if self.closed:
            return
        if self.expires_at is not None and wall_clock >= self.expires_at:
            self.close("token expired")
        elif self._direct is not None:
            paused_since = self._direct.paused_since()
            if paused_since is not None and now - paused_since > send_timeout:
                stats.slow_reader_evictions += 1
                self.close("slow reader: write timed out")
            elif now - self.last_write >= heartbeat and not self._pending:
                self.write(sse.KEEPALIVE)
        elif self._inflight is not None:
            if now - self._inflight_since > send_timeout:
                stats.slow_reader_evictions += 1
                self.close("slow reader: write timed out")
        elif now - self.last_write >= heartbeat:
            self.write(sse.KEEPALIVE)

    def close(self, reason: str) -> None:
        """End the stream from the server side (idempotent)."""
        if self.closed:
            return
        if self._pending and self._pending_bytes + self._backlog_bytes <= self._max_backlog:
            # What this turn wrote before the close still goes out (it may fail: then
            # that failure closed the stream already).
            self.flush()
            if self.closed:
                return
        self.closed = True
        for task in list(self._catch_up_tasks or ()):
            task.cancel()
        self._backlog.clear()
        self._backlog_bytes = 0
        self._pending.clear()
        self._pending_bytes = 0
        self._on_close(reason)

    def finish(self, last_words: bytes = b"") -> bool:
        """Try to end the HTTP response cleanly, after ``last_words``; False if the socket is full.

        On a direct connection a full socket is aborted at once (issue 15: an
        evicted reader must not hold its connection and kernel buffers).
        """
        if self._direct is not None:
            return self._direct.finish(last_words)
        if self._inflight is not None:
            self._inflight.cancel()
            return False
        assert self._asgi_send is not None
        try:
            pending = start_eagerly(
                self._asgi_send({"type": "http.response.body", "body": last_words, "more_body": False})
            )
        except Exception:
            return False
        if pending is not None:
            pending.cancel()
            return False
        return True
