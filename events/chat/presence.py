"""Who is in a chat room now, correct across server processes.

Each open chat stream of a known person (a user, or a guest with a nickname)
is a ``ChatPresence`` row, written when the stream opens and deleted when it
closes (a closed browser closes its TCP connection: ``http.disconnect``). Each
process refreshes its own rows every ``PRESENCE_REFRESH_SECONDS`` on the
tick; all writes go in batches, off the data path's database thread (Tracker); rows not refreshed for three intervals belong to a
process that died, and any process serving the room deletes them. Every change
sends an ephemeral ``presence`` event with the room's list of people, counted
once per person however many connections they have.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from events.chat import rules
from events.chat.conf import chat_conf
from events.chat.models import ChatPresence
from events.chat.rules import Author
from events.deliver.stream import StreamChannel
from events.models import Channel
from events.publish.store import fan_out_ephemeral
from events.runtime.bookkeeping import Job, off_path
from events.signals import stream_authorized, tick

logger = logging.getLogger(__name__)

PRESENCE_EVENT = "presence"
EXPIRY_INTERVALS = 3
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def cutoff() -> Any:
    return timezone.now() - timedelta(seconds=EXPIRY_INTERVALS * chat_conf.PRESENCE_REFRESH_SECONDS)


def people(channel_id: int) -> list[dict[str, Any]]:
    """The people in a room now: one entry per author, sorted by name."""
    rows = (
        ChatPresence.objects.filter(channel_id=channel_id, last_seen__gte=cutoff())
        .values_list("author", "name", "guest")
        .distinct()
    )
    unique = {author: {"name": name, "guest": guest} for author, name, guest in rows}
    return sorted(unique.values(), key=lambda person: (person["name"].lower(), person["guest"]))


def snapshot(channel_id: int) -> dict[str, Any]:
    present = people(channel_id)
    return {"people": present, "count": len(present)}


def _insert(connection: str, channel_id: int, author: Author) -> None:
    ChatPresence.objects.create(
        channel_id=channel_id,
        connection=connection,
        author=author.label,
        name=author.name,
        guest=author.guest,
        process=PROCESS_ID,
        last_seen=timezone.now(),
    )


def _delete(connection: str) -> None:
    ChatPresence.objects.filter(connection=connection).delete()


def _refresh(connections: dict[str, tuple[int, Author]], channel_ids: list[int]) -> list[int]:
    """Mark this process's rows as seen; drop expired rows of these rooms; the rooms that changed."""
    changed: set[int] = set()
    if connections:
        mine = ChatPresence.objects.filter(connection__in=list(connections))
        if mine.update(last_seen=timezone.now()) < len(connections):
            # Another process took our rows for dead (this one stalled past
            # the expiry): put them back.
            present = set(mine.values_list("connection", flat=True))
            for connection, (channel_id, author) in connections.items():
                if connection not in present:
                    _insert(connection, channel_id, author)
                    changed.add(channel_id)
    expired = ChatPresence.objects.filter(channel_id__in=channel_ids, last_seen__lt=cutoff())
    dead = set(expired.values_list("channel_id", flat=True))
    if dead:
        expired.delete()
    return sorted(changed | dead)


def _people_by_room(channel_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """``people()`` for several rooms in one query."""
    rows = (
        ChatPresence.objects.filter(channel_id__in=channel_ids, last_seen__gte=cutoff())
        .values_list("channel_id", "author", "name", "guest")
        .distinct()
    )
    unique: dict[int, dict[str, dict[str, Any]]] = {channel_id: {} for channel_id in channel_ids}
    for channel_id, author, name, guest in rows:
        unique[channel_id][author] = {"name": name, "guest": guest}
    return {
        channel_id: sorted(found.values(), key=lambda person: (person["name"].lower(), person["guest"]))
        for channel_id, found in unique.items()
    }


@dataclass
class Batch:
    """What one flush writes: a few statements whatever the number of streams."""

    joined: dict[str, tuple[int, Author]] = field(default_factory=dict)
    left: set[str] = field(default_factory=set)
    # Rooms whose people may have changed: announced after the flush.
    changed: dict[int, StreamChannel] = field(default_factory=dict)
    # Set when a refresh is due: this process's rows, and the rooms to expire dead rows in.
    refresh: dict[str, tuple[int, Author]] | None = None
    rooms: list[int] = field(default_factory=list)


def _write(batch: Batch) -> dict[int, dict[str, Any]]:
    """Apply one batch (bulk insert, one delete, the refresh); the snapshots of the rooms that changed."""
    changed = set(batch.changed)
    if batch.joined:
        now = timezone.now()
        ChatPresence.objects.bulk_create(
            [
                ChatPresence(
                    channel_id=channel_id,
                    connection=connection,
                    author=author.label,
                    name=author.name,
                    guest=author.guest,
                    process=PROCESS_ID,
                    last_seen=now,
                )
                for connection, (channel_id, author) in batch.joined.items()
            ]
        )
    if batch.left:
        ChatPresence.objects.filter(connection__in=list(batch.left)).delete()
    if batch.refresh is not None:
        changed.update(_refresh(batch.refresh, batch.rooms))
    if not changed:
        return {}
    return {
        channel_id: {"people": present, "count": len(present)}
        for channel_id, present in _people_by_room(sorted(changed)).items()
    }


class Tracker:
    """This process's presence rows, written in batches off the data path (issue 15).

    A stream that opens or closes changes only memory here; one flush at a
    time, in a bookkeeping thread with its own database connection, writes
    what changed (one bulk insert, one delete, the refresh when it is due) and
    announces each changed room once, however many readers came or went: a
    reconnect storm into a room costs a few statements, not a few per reader.
    """

    def __init__(self) -> None:
        # Rows this process wrote (or is about to): connection id -> room and person.
        self.connections: dict[str, tuple[StreamChannel, Author]] = {}
        # Rooms with local streams (anonymous readers too): stream count, and the room.
        self.watchers: Counter[int] = Counter()
        self.rooms: dict[int, StreamChannel] = {}
        self._last_refresh = time.monotonic()
        self._pending = Batch()
        self._refresh_due = False
        self.job = Job("Chat presence")

    def watch(self, channel: StreamChannel) -> None:
        self.watchers[channel.id] += 1
        self.rooms[channel.id] = channel

    def unwatch(self, channel: StreamChannel) -> None:
        self.watchers[channel.id] -= 1
        if self.watchers[channel.id] <= 0:
            del self.watchers[channel.id]
            self.rooms.pop(channel.id, None)

    def join(self, channel: StreamChannel, author: Author) -> str:
        connection = uuid.uuid4().hex
        self.connections[connection] = (channel, author)
        self._pending.joined[connection] = (channel.id, author)
        self._pending.changed[channel.id] = channel
        self._kick()
        return connection

    def leave(self, connection: str) -> None:
        entry = self.connections.pop(connection, None)
        if self._pending.joined.pop(connection, None) is None:
            self._pending.left.add(connection)
        if entry is not None:
            # Announced even if this was the process's last reader there.
            self._pending.changed[entry[0].id] = entry[0]
        self._kick()

    def tick(self, now: float) -> None:
        if now - self._last_refresh < chat_conf.PRESENCE_REFRESH_SECONDS or not self.rooms:
            return
        self._last_refresh = now
        self._refresh_due = True
        self._kick()

    def _kick(self) -> None:
        # One flush at a time; what arrives meanwhile is picked up by its loop.
        if not self.job.busy:
            self.job.start(self._flush)

    async def _flush(self) -> None:
        while self._pending.joined or self._pending.left or self._pending.changed or self._refresh_due:
            batch, self._pending = self._pending, Batch()
            if self._refresh_due:
                self._refresh_due = False
                # Any process with readers in a room expires a dead process's
                # rows there, so the people still reading see it.
                batch.refresh = {
                    connection: (room.id, author)
                    for connection, (room, author) in self.connections.items()
                    if connection not in batch.joined
                }
                batch.rooms = list(self.rooms)
            snapshots = await off_path(_write, batch)
            for channel_id, payload in snapshots.items():
                room = batch.changed.get(channel_id) or self.rooms.get(channel_id)
                if room is not None:
                    await fan_out_ephemeral(
                        Channel(pk=room.id, slug=room.slug), payload, event=PRESENCE_EVENT
                    )


_tracker: Tracker | None = None
_tracker_loop: asyncio.AbstractEventLoop | None = None


def get_tracker() -> Tracker:
    """This process's tracker, for the running event loop (refreshed on the tick: refresh_on_tick)."""
    global _tracker, _tracker_loop
    loop = asyncio.get_running_loop()
    if _tracker is None or _tracker_loop is not loop:
        _tracker = Tracker()
        _tracker_loop = loop
    return _tracker


@receiver(tick, dispatch_uid="pushsite-chat-presence")
async def refresh_on_tick(sender: Any, now: float, **kwargs: Any) -> None:
    """Keep this process's presence rows fresh and expire dead processes' rows."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if _tracker is not None and _tracker_loop is loop:
        _tracker.tick(now)


class Membership:
    """One stream in one room: listed at once if its reader is known, gone when the stream closes."""

    def __init__(self, channel: StreamChannel, author: Author | None) -> None:
        self.channel = channel
        tracker = get_tracker()
        tracker.watch(channel)
        self.connection = tracker.join(channel, author) if author is not None else None

    def leave(self) -> None:
        tracker = get_tracker()
        tracker.unwatch(self.channel)
        if self.connection is not None:
            tracker.leave(self.connection)


class RoomPresence:
    """A stream's presence in the chat rooms it carries: joined when it opens, left when it ends."""

    def __init__(self, rooms: list[StreamChannel], author: Author | None) -> None:
        self.rooms = rooms
        self.author = author
        self.memberships: list[Membership] = []

    def open(self) -> None:
        self.memberships = [Membership(room, self.author) for room in self.rooms]

    def close(self) -> None:
        for membership in self.memberships:
            membership.leave()
        self.memberships = []


@receiver(stream_authorized, dispatch_uid="pushsite-chat-presence")
def attach_presence(
    sender: Any, channels: list[Channel], user: Any, session: Any, **kwargs: Any
) -> RoomPresence | None:
    """Runs in the database thread while a subscriber is let in: who the reader is in each room."""
    rooms = [StreamChannel(id=channel.pk, slug=channel.slug) for channel in channels if channel.is_chat]
    if not rooms:
        return None
    return RoomPresence(rooms, rules.identity(user, session))
