"""The per-process relay: one channel-layer member feeding every local connection.

Each server process has one relay. For every channel that has subscribers in
this process, the relay's single layer channel is the only member of the
channel's group, so a publish costs one layer message per *process*, not per
connection (docs/performance.md has the measurements behind this shape).

A :class:`Feed` hands each frame to its local streams in sequence order and
with no gaps: a frame beyond the next expected one means the channel layer lost
something (it is at-most-once by design), so the feed reads the missing
messages back from the database first. Once a poll interval, the relay also
compares each feed's position with the database, which catches a lost last
message, a lapsed group membership or a restarted Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.dispatch import receiver

from events import metrics, signals
from events.conf import conf
from events.deliver import history
from events.deliver.directory import ChannelDirectory
from events.deliver.stream import Stream
from events.metrics import stats
from events.models import Channel, Visibility
from events.publish.store import FRAME_MESSAGE_TYPE, group_name
from events.runtime import tick
from events.runtime.bookkeeping import Job
from events.runtime.shutdown import close_streams_on_signals
from events.runtime.tasks import detached
from events.wire import cursors

logger = logging.getLogger(__name__)

PING_MESSAGE_TYPE = "pushsite.ping"
# A message read from the database whose layer frame has not come this long
# after is counted as lost by the layer (pushsite_layer_lost_total): long
# enough for a frame still in flight or overtaken by a later one to arrive.
LAYER_LOSS_SECONDS = 5.0
# At most this many such messages are watched per feed; past it, the oldest
# are counted as lost at once (a layer that delivers nothing, e.g. Redis down).
MAX_AWAITED_FRAMES = 10_000


class Feed:
    """One channel's frames, in order and without gaps, for this process's streams."""

    __slots__ = (
        "_id_suffix",
        "_task",
        "arrived",
        "awaited",
        "catching_up",
        "channel_id",
        "empty_since",
        "epoch",
        "position",
        "slug",
        "streams",
        "visibility",
    )

    def __init__(self, channel_id: int, slug: str) -> None:
        self.channel_id = channel_id
        self.slug = slug
        self.streams: set[Stream] = set()
        self.position = 0
        # Highest sequence seen while reading from the database, or None when live.
        self.catching_up: int | None = None
        self.empty_since: float | None = None
        # Loss accounting (pushsite_layer_lost_total): sequences dispatched from
        # the database whose layer frame has not arrived, with when; and frames
        # that arrived while the feed was reading from the database.
        self.awaited: dict[int, float] = {}
        self.arrived: set[int] = set()
        # Updated by the relay's database poll; non-public feeds have their
        # readers' access re-checked (events/access/revocation.py).
        self.visibility = "public"
        # The end of a single-channel stream's id line: "~<epoch>\n" (events/wire/cursors.py).
        self.epoch = ""
        self._id_suffix = b"\n"
        self._task: asyncio.Task[None] | None = None

    def set_epoch(self, epoch: str) -> None:
        self.epoch = epoch
        self._id_suffix = cursors.id_suffix(epoch)

    def on_frame(self, sequence: int | None, fields: bytes, published: float) -> None:
        if sequence is None:
            # A live-only event (publishing.fan_out_ephemeral): outside the
            # sequence, so no order or gap logic; streams that are here get it.
            for stream in tuple(self.streams):
                stream.deliver_ephemeral(fields)
            return
        if sequence <= self.position:
            if self.awaited.pop(sequence, None) is not None:
                # Read from the database first, but the layer did deliver it: late, not lost.
                stats.layer_late += 1
            return
        if self.catching_up is not None:
            self.catching_up = max(self.catching_up, sequence)
            self.arrived.add(sequence)
            return
        if sequence != self.position + 1:
            stats.dropped_by_layer += sequence - self.position - 1
            self.arrived.add(sequence)
            logger.info(
                "Channel %s: the layer skipped %s..%s; reading them from the database.",
                self.slug,
                self.position + 1,
                sequence - 1,
            )
            self.catch_up(sequence)
            return
        self.position = sequence
        metrics.record_delivery_lag(published)
        self._dispatch(sequence, fields)

    def _dispatch(self, sequence: int, fields: bytes, *, replayed: bool = False) -> None:
        single_frame = b"id: %d" % sequence + self._id_suffix + fields
        channel_id = self.channel_id
        if replayed:
            # Gap fill: a stream that is behind reads the rest itself (events/deliver/stream.py).
            taken = sum(
                stream.deliver_replayed(channel_id, sequence, fields, single_frame)
                for stream in tuple(self.streams)
            )
            metrics.live_deliveries[(channel_id, sequence)] += taken
            return
        metrics.live_deliveries[(channel_id, sequence)] += len(self.streams)
        for stream in tuple(self.streams):
            stream.deliver(channel_id, sequence, fields, single_frame)

    def catch_up(self, target: int) -> None:
        """Read from the database until the feed has dispatched ``target``."""
        if self.catching_up is not None:
            self.catching_up = max(self.catching_up, target)
            return
        self.catching_up = target
        self._task = detached(self._catch_up())
        self._task.add_done_callback(self._catch_up_done)

    async def _catch_up(self) -> None:
        batch = conf.REPLAY_BATCH_SIZE
        while True:
            stored = await history.afetch_frames_after(self.channel_id, self.slug, self.position, batch)
            now = time.monotonic()
            for frame in stored:
                self.position = frame.sequence
                if frame.sequence in self.arrived:
                    self.arrived.discard(frame.sequence)
                else:
                    self.awaited[frame.sequence] = now
                self._dispatch(frame.sequence, frame.fields, replayed=True)
            assert self.catching_up is not None
            if len(stored) < batch:
                if self.position < self.catching_up and not stored:
                    # Rows gone (pruned): jump; streams detect the gap themselves.
                    self.position = self.catching_up
                if self.position >= self.catching_up:
                    self.catching_up = None
                    self.arrived = {sequence for sequence in self.arrived if sequence > self.position}
                    self._bound_awaited()
                    return

    def _catch_up_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if task.cancelled():
            return
        if task.exception() is not None:
            # Leave the feed live at its position; the next poll retries.
            logger.error("Channel %s: gap fill failed.", self.slug, exc_info=task.exception())
            self.catching_up = None

    def _bound_awaited(self) -> None:
        excess = len(self.awaited) - MAX_AWAITED_FRAMES
        if excess > 0:
            for sequence in sorted(self.awaited)[:excess]:
                del self.awaited[sequence]
            stats.lost_by_layer += excess

    def count_lost(self, now: float) -> int:
        """Messages whose layer frame has not come LAYER_LOSS_SECONDS after the database gave them."""
        lost = [sequence for sequence, since in self.awaited.items() if now - since > LAYER_LOSS_SECONDS]
        for sequence in lost:
            del self.awaited[sequence]
        stats.lost_by_layer += len(lost)
        return len(lost)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Relay:
    """This process's channel-layer member and the owner of its streams."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self.feeds: dict[int, Feed] = {}
        self.streams: set[Stream] = set()
        # Open streams per client address, for PUSHSITE_MAX_STREAMS_PER_IP.
        self.streams_per_ip: Counter[str] = Counter()
        self.channel_name = ""
        self._feeds_ready: dict[int, asyncio.Future[None]] = {}
        self._pings: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._started: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_poll = 0.0
        self._last_join = time.monotonic()
        # The database poll and group re-joins: started by the tick, never awaited by it.
        self.housekeeping_job = Job("Relay housekeeping")
        # Set on SIGTERM/SIGINT: new streams are refused (events/runtime/shutdown.py).
        self.draining = False
        # Public channels as the database last admitted them (events/deliver/directory.py).
        self.directory = ChannelDirectory()

    async def _start(self) -> None:
        self.channel_name = await self.layer.new_channel("pushsite.relay.")
        self._tasks = [
            detached(self._receive_loop()),
            # Every periodic job in the process runs on this one tick (events/signals.py).
            detached(tick.run(self)),
        ]
        close_streams_on_signals(self)
        logger.info("Relay started on layer channel %s.", self.channel_name)

    async def ready(self) -> None:
        """Wait until the relay has its layer channel; a failed start is retried on the next call."""
        if self._started is None or (
            self._started.done() and (self._started.cancelled() or self._started.exception())
        ):
            self._started = detached(self._start())
        await asyncio.shield(self._started)

    async def ping(self) -> None:
        """Send a message to this relay through the channel layer and wait for it (bound it)."""
        await self.ready()
        token = uuid.uuid4().hex
        waiter = self.loop.create_future()
        self._pings[token] = waiter
        try:
            await self.layer.send(self.channel_name, {"type": PING_MESSAGE_TYPE, "token": token})
            await waiter
        finally:
            self._pings.pop(token, None)

    # --- subscriptions ----------------------------------------------------------

    async def open_feed(self, channel_id: int, slug: str) -> None:
        """Make sure this process is in the channel's group (raises when the layer is down)."""
        await self.ready()
        opening = self._feeds_ready.get(channel_id)
        if opening is None and channel_id not in self.feeds:
            opening = detached(self._open_feed(channel_id, slug))
            self._feeds_ready[channel_id] = opening
        if opening is not None:
            # The feed is in self.feeds while it opens (to record frames) but
            # must not take streams until it knows its position.
            await asyncio.shield(opening)

    def feed_is_open(self, channel_id: int) -> bool:
        """True when the channel's feed is open and knows its position (``open_feed`` would not wait)."""
        return channel_id in self.feeds and channel_id not in self._feeds_ready

    async def subscribe(self, stream: Stream, channel_id: int, slug: str) -> int:
        """Attach ``stream`` to the channel's feed; returns what the feed has dispatched."""
        await self.open_feed(channel_id, slug)
        return self.attach(stream, channel_id)

    def can_attach(self, channel_id: int) -> bool:
        """True when ``subscribe`` would not wait: the relay started and the channel's feed is open.

        Then :meth:`attach` does all ``subscribe`` would, without a coroutine or the two
        awaits of a done future (the common case of a stream opening: issue 16).
        """
        started = self._started
        return (
            started is not None
            and started.done()
            and not started.cancelled()
            and started.exception() is None
            and self.feed_is_open(channel_id)
        )

    def attach(self, stream: Stream, channel_id: int) -> int:
        """``subscribe`` once the feed is open (:meth:`can_attach`); returns what the feed has dispatched."""
        feed = self.feeds[channel_id]
        feed.streams.add(stream)
        feed.empty_since = None
        self.streams.add(stream)
        # A feed still reading from the database will dispatch up to its target.
        return max(feed.position, feed.catching_up or 0)

    async def _open_feed(self, channel_id: int, slug: str) -> None:
        try:
            feed = Feed(channel_id, slug)
            # Join first, then read the position: anything published after the
            # read arrives through the group, so nothing falls in between.
            feed.catching_up = 0
            self.feeds[channel_id] = feed
            await self.layer.group_add(group_name(channel_id), self.channel_name)
            states = await history.afetch_channel_states([channel_id])
            feed.position = states[channel_id].last_sequence if channel_id in states else 0
            feed.visibility = states[channel_id].visibility if channel_id in states else "public"
            feed.set_epoch(states[channel_id].epoch if channel_id in states else "")
            target = max(feed.catching_up, feed.position)
            feed.catching_up = None
            feed.arrived = {sequence for sequence in feed.arrived if sequence > feed.position}
            if target > feed.position:
                feed.catch_up(target)
        except BaseException:
            self.feeds.pop(channel_id, None)
            raise
        finally:
            self._feeds_ready.pop(channel_id, None)

    def live_position(self, channel: Channel) -> int | None:
        """Where a new live reader of ``channel`` starts, from its feed; None unless the feed is
        open, live, public as of the last poll, and of the same epoch as ``channel``."""
        feed = self.feeds.get(channel.pk)
        if feed is None or channel.pk in self._feeds_ready or feed.catching_up is not None:
            return None
        if feed.visibility != Visibility.PUBLIC or feed.epoch != channel.epoch:
            return None
        return feed.position

    def unsubscribe(self, stream: Stream) -> None:
        self.streams.discard(stream)
        for channel in stream.channels:
            feed = self.feeds.get(channel.id)
            if feed is not None:
                feed.streams.discard(stream)
                if not feed.streams:
                    feed.empty_since = time.monotonic()

    # --- the loops ----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                # The layer is down (e.g. Redis restarting). Streams stay open
                # and heart-beating; the poll keeps them fed from the database.
                delay = min(5.0, 0.1 * 2**failures)
                logger.warning("Channel layer receive failed; retrying in %.1fs.", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if message.get("type") == PING_MESSAGE_TYPE:
                waiter = self._pings.pop(message.get("token", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                continue
            if message.get("type") != FRAME_MESSAGE_TYPE:
                continue
            feed = self.feeds.get(message["channel_id"])
            if feed is not None:
                feed.on_frame(message["sequence"], message["fields"], message["published"])

    async def housekeeping(self, now: float) -> None:
        """The relay's own share of the tick: idle feeds, the database poll, group re-joins."""
        self._drop_idle_feeds(now)
        for feed in list(self.feeds.values()):
            if feed.awaited and feed.count_lost(time.monotonic()):
                # With the in-memory layer a publish from another process (manage.py
                # publish) never reaches the layer: the poll is its way in, not a fault.
                # pushsite_layer_lost_total counts it either way.
                level = logging.INFO if isinstance(self.layer, InMemoryChannelLayer) else logging.WARNING
                logger.log(
                    level,
                    "Channel %s: the channel layer never delivered some messages (filled from the database).",
                    feed.slug,
                )
        if now - self._last_poll >= conf.RELAY_POLL_SECONDS:
            self._last_poll = now
            await self._poll_database()
        group_expiry = float(getattr(self.layer, "group_expiry", 86400))
        if now - self._last_join >= group_expiry / 4:
            await self._rejoin_groups()

    def _drop_idle_feeds(self, now: float) -> None:
        linger = conf.FEED_LINGER_SECONDS
        for channel_id, feed in list(self.feeds.items()):
            if feed.empty_since is not None and now - feed.empty_since > linger:
                feed.stop()
                del self.feeds[channel_id]
                task = detached(self._discard(channel_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _discard(self, channel_id: int) -> None:
        with contextlib.suppress(Exception):
            await self.layer.group_discard(group_name(channel_id), self.channel_name)

    async def _poll_database(self) -> None:
        if not self.feeds:
            return
        # Positions as they were before the read: live frames keep arriving while
        # it runs, so a feed may be past what the read saw. Only a sequence
        # behind where the feed already was means the database went back.
        positions_before = {channel_id: feed.position for channel_id, feed in self.feeds.items()}
        read_at = time.monotonic()
        states = await history.afetch_channel_states(list(self.feeds))
        lagging = False
        for channel_id, feed in list(self.feeds.items()):
            state = states.get(channel_id)
            if state is None or not state.is_active:
                self.directory.forget(feed.slug)
                self.close_channel(channel_id, "channel deactivated")
                continue
            feed.visibility = state.visibility
            if state.visibility != Visibility.PUBLIC or state.epoch != feed.epoch:
                self.directory.forget(feed.slug)
            elif state.row is not None:
                # The poll admits too: a public channel's entry stays fresh while it has a
                # feed, instead of lapsing each interval and sending every open in flight
                # to the database at once (docs/performance.md, issue 16).
                self.directory.remember([state.row], now=read_at)
            went_back = state.last_sequence < positions_before.get(channel_id, 0)
            if went_back and state.epoch == feed.epoch:
                # The database went back (restored from a backup?): positions
                # clients hold may name other messages now. A new epoch makes
                # each of them an explicit reset (one process wins the update).
                logger.warning(
                    "Channel %s: the database's sequence %s is behind %s; giving the channel a new epoch.",
                    feed.slug,
                    state.last_sequence,
                    feed.position,
                )
                await history.arenew_epoch(channel_id, feed.epoch)
                continue
            if state.epoch != feed.epoch:
                # Streams carry the epoch in every id: end them, they resume with a reset.
                self.close_channel(channel_id, "channel epoch changed")
                feed.stop()
                feed.catching_up = None
                feed.position = state.last_sequence
                # The old epoch's sequences are not the layer's to deliver any more.
                feed.awaited.clear()
                feed.arrived.clear()
                feed.set_epoch(state.epoch)
                continue
            if feed.catching_up is None and state.last_sequence > feed.position:
                lagging = True
                stats.dropped_by_layer += state.last_sequence - feed.position
                feed.catch_up(state.last_sequence)
        if lagging:
            # Lost messages may mean lost group memberships (expired, or a
            # Redis restart): join again so live delivery resumes.
            await self._rejoin_groups()

    async def _rejoin_groups(self) -> None:
        self._last_join = time.monotonic()
        for channel_id in list(self.feeds):
            try:
                # Bounded: a hung Redis must not hold the housekeeping forever.
                async with asyncio.timeout(conf.LAYER_TIMEOUT_SECONDS):
                    await self.layer.group_add(group_name(channel_id), self.channel_name)
            except Exception:
                logger.warning("Could not rejoin the group of channel %s.", channel_id, exc_info=True)
                return

    def close_channel(self, channel_id: int, reason: str) -> None:
        feed = self.feeds.get(channel_id)
        if feed is None:
            return
        for stream in tuple(feed.streams):
            stream.close(reason)

    def close_all(self, reason: str) -> None:
        for stream in tuple(self.streams):
            stream.close(reason)

    async def stop(self) -> None:
        """Close every stream and leave every group (graceful shutdown)."""
        self.close_all("server shutting down")
        for task in self._tasks:
            task.cancel()
        if self.housekeeping_job.running is not None:
            self.housekeeping_job.running.cancel()
        for feed in self.feeds.values():
            feed.stop()
        for channel_id in list(self.feeds):
            await self._discard(channel_id)
        self.feeds.clear()


_relay: Relay | None = None


def get_relay() -> Relay:
    """This process's relay, created on first use in the running event loop."""
    global _relay
    loop = asyncio.get_running_loop()
    if _relay is None or _relay.loop is not loop:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("Pushsite needs a channel layer (settings.CHANNEL_LAYERS).")
        _relay = Relay(layer)
    return _relay


def current_relay() -> Relay | None:
    """The relay if one runs in this event loop, without creating one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _relay if _relay is not None and _relay.loop is loop else None


def active_relay() -> Relay | None:
    """The relay of this process, from any thread (for metrics)."""
    return _relay


def describe(relay: Relay | None) -> dict[str, Any]:
    """A snapshot for health and admin views."""
    if relay is None:
        return {"connections": 0, "channels": {}}
    return {
        "connections": len(relay.streams),
        "channels": {feed.slug: len(feed.streams) for feed in relay.feeds.values()},
    }


@receiver(signals.tick, dispatch_uid="pushsite-relay-housekeeping")
async def relay_housekeeping(sender: Relay, now: float, **kwargs: Any) -> None:
    # Started, not awaited: a slow poll or a hung layer never delays the
    # heartbeats on the same tick; a run still going skips this turn (issue 15).
    sender.housekeeping_job.start(lambda: sender.housekeeping(now))
