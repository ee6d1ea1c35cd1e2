"""Fan-out in the background: a publish hands its frame over and answers at once (issue 15).

A ``201`` means the message is stored; sending its frame to the channel's group is
this module's job, after the answer. Each event loop has one :class:`Sender`: a
bounded queue and one task that sends what is queued, in order, each
``group_send`` bounded by ``PUSHSITE_LAYER_TIMEOUT_SECONDS``. One task, not
several: per-channel order holds for whatever is sent, and the default layer
(channels-redis pub/sub) sends one message at a time per Redis shard anyway.

What the sender cannot send in time it drops and counts
(``pushsite_fanout_dropped_total``): the oldest frame when the queue is full,
and a frame that waited longer than the layer timeout (stale: queued behind a
hung Redis). A dropped frame is never sent later, so every relay that follows
the channel fills it from the database (its gap check, or its poll within
``PUSHSITE_RELAY_POLL_SECONDS``) and counts it as lost by the layer
(``pushsite_layer_lost_total``, the alertable signal). Dropping the oldest keeps
what is sent fresh, and a fresh frame beyond a gap makes a relay fill the gap at
once instead of at its next poll.

Sync code running in a server process (an admin action, a sync view: a thread
of ``sync_to_async`` under the server's loop) queues on the server's loop with
:func:`submit_from_thread`, so it never waits on the layer either. Code with no
event loop of its own (management commands: ``publish()`` fans out on commit)
sends directly with :func:`send_now`: a temporary loop would end before a
background task ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from asgiref.sync import SyncToAsync
from channels.layers import get_channel_layer

from events import metrics
from events.conf import conf
from events.runtime.tasks import detached

logger = logging.getLogger(__name__)

# Reasons a frame is dropped (the label of pushsite_fanout_dropped_total).
QUEUE_FULL = "queue_full"
STALE = "stale"
SHUTDOWN = "shutdown"
# On graceful shutdown, what is queued is sent for at most this long.
DRAIN_SECONDS = 1.0

for _reason in (QUEUE_FULL, STALE, SHUTDOWN):
    # Every series exists from the start, at zero, so rate() and increase() see the first drop.
    metrics.FANOUT_DROPPED.labels(_reason)


async def send_now(group: str, message: dict[str, Any]) -> bool:
    """``group_send`` within LAYER_TIMEOUT_SECONDS; False (counted and logged) if the layer failed."""
    layer = get_channel_layer()
    if layer is None:
        return True
    try:
        async with asyncio.timeout(conf.LAYER_TIMEOUT_SECONDS):
            await layer.group_send(group, message)
    except Exception as error:
        metrics.FANOUT_FAILURES.inc()
        _failures.report(group, error)
        return False
    return True


class FailureLog:
    """A layer that is down fails every send: log the first failure with its cause, then at
    most one line per ``interval`` with how many failed since (the counter has each one)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.since = 0

    def report(self, group: str, error: Exception) -> None:
        self.since += 1
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        logger.warning(
            "group_send to %s failed (%s failed sends since the last report); "
            "relays read those messages from the database.",
            group,
            self.since,
            exc_info=error,
        )
        self.last, self.since = now, 0


_failures = FailureLog(10.0)


@dataclass(slots=True)
class Outgoing:
    """One layer message waiting to be sent, and when it was queued (monotonic)."""

    group: str
    message: dict[str, Any]
    queued_at: float


class Sender:
    """One event loop's fan-out: a bounded FIFO and the one task that sends it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: deque[Outgoing] = deque()
        self.dropped = 0
        # When the send in progress started (monotonic), None when idle: /healthz shows it.
        self.sending_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        # Set on shutdown: frames are sent while draining, none are taken afterwards.
        self._closed = False

    def submit(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``group`` and return; the oldest frame goes when the queue is full."""
        if self._closed:
            self._drop(SHUTDOWN)
            return
        capacity = max(1, conf.FANOUT_QUEUE_SIZE)
        while len(self.queue) >= capacity:
            self.queue.popleft()
            self._drop(QUEUE_FULL)
        self.queue.append(Outgoing(group, message, time.monotonic()))
        if self._task is None or self._task.done():
            # The task ends when the queue is empty; it checks the queue again
            # before returning, with no await in between, so a frame queued
            # while it runs is never stranded. Detached: not a request's context.
            self._task = detached(self._run())

    async def _run(self) -> None:
        while self.queue:
            outgoing = self.queue.popleft()
            started = time.monotonic()
            if started - outgoing.queued_at > conf.LAYER_TIMEOUT_SECONDS:
                # Queued behind a hung layer: the relays' poll has it by now, and
                # sending it late would only hide the loss from pushsite_layer_lost_total.
                self._drop(STALE)
                continue
            self.sending_since = started
            try:
                await send_now(outgoing.group, outgoing.message)
            finally:
                self.sending_since = None

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        metrics.FANOUT_DROPPED.labels(reason).inc()
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning(
                "Fan-out dropped a frame (%s; %s in all): relays fill it from the database.",
                reason,
                self.dropped,
            )

    async def flush(self) -> None:
        """Wait until everything queued so far has been sent (or dropped)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def drain(self, seconds: float) -> None:
        """Send what is queued for at most ``seconds``; drop (and count) the rest."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(seconds):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
        while self.queue:
            self.queue.popleft()
            self._drop(SHUTDOWN)


_senders: dict[asyncio.AbstractEventLoop, Sender] = {}


def sender() -> Sender:
    """The running event loop's sender, created on first use."""
    loop = asyncio.get_running_loop()
    current = _senders.get(loop)
    if current is None:
        # A loop that has closed (tests run one per test) leaves its sender behind.
        for old in [old for old in _senders if old.is_closed()]:
            del _senders[old]
        current = _senders[loop] = Sender(loop)
    return current


def submit(group: str, message: dict[str, Any]) -> None:
    """Queue a layer message for the running loop's background sender; returns at once."""
    sender().submit(group, message)


def submit_from_thread(group: str, message: dict[str, Any]) -> bool:
    """From a ``sync_to_async`` thread under a running server: queue on the server's loop.

    False (nothing queued) in any other thread: a management command has no
    loop that outlives the call, so its caller sends directly.
    """
    # asgiref notes the loop a sync_to_async thread serves (and the process it
    # belongs to: a forked child must not use its parent's loop).
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)
    if loop is None or pid != os.getpid() or loop.is_closed() or not loop.is_running():
        return False
    loop.call_soon_threadsafe(submit, group, message)
    return True


def queued() -> int:
    """Frames waiting to be sent, in every loop of this process (metrics, from any thread)."""
    return sum(len(each.queue) for each in list(_senders.values()))


def state() -> dict[str, Any]:
    """The running loop's fan-out, for /healthz: frames queued, the oldest one's wait, frames dropped."""
    current = _senders.get(asyncio.get_running_loop())
    if current is None:
        return {"queued": 0, "oldest_seconds": 0.0, "dropped": 0}
    oldest = time.monotonic() - current.queue[0].queued_at if current.queue else 0.0
    if current.sending_since is not None:
        oldest = max(oldest, time.monotonic() - current.sending_since)
    return {"queued": len(current.queue), "oldest_seconds": round(oldest, 3), "dropped": current.dropped}


async def flush() -> None:
    """Wait until this loop's sender has sent (or dropped) everything queued so far."""
    current = _senders.get(asyncio.get_running_loop())
    if current is not None:
        await current.flush()


async def drain(seconds: float = DRAIN_SECONDS) -> None:
    """On graceful shutdown: send what this loop has queued, within ``seconds``."""
    current = _senders.get(asyncio.get_running_loop())
    if current is not None:
        await current.drain(seconds)
