"""Who is in a chat room now, correct across server processes.

Each open chat stream of a known person (a user, or a guest with a nickname)
is a ``ChatPresence`` row, written when the stream opens and deleted when it
closes (a closed browser closes its TCP connection: ``http.disconnect``). Each
process refreshes its own rows every ``PRESENCE_REFRESH_SECONDS`` from the
relay's housekeeping tick; rows not refreshed for three intervals belong to a
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
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.dispatch import receiver
from django.utils import timezone

from events.chat import rules
from events.chat.models import ChatPresence
from events.chat.rules import Author
from events.conf import conf
from events.deliver.stream import StreamChannel
from events.models import Channel
from events.publish.store import fan_out_ephemeral
from events.runtime.tasks import detached
from events.signals import stream_authorized, tick

logger = logging.getLogger(__name__)

PRESENCE_EVENT = "presence"
EXPIRY_INTERVALS = 3
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def cutoff() -> Any:
    return timezone.now() - timedelta(seconds=EXPIRY_INTERVALS * conf.PRESENCE_REFRESH_SECONDS)


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


class Tracker:
    """This process's presence rows, refreshed from the relay's housekeeping tick."""

    def __init__(self) -> None:
        # Rows this process wrote: connection id -> room and person.
        self.connections: dict[str, tuple[StreamChannel, Author]] = {}
        # Rooms with local streams (anonymous readers too): stream count, and the room.
        self.watchers: Counter[int] = Counter()
        self.rooms: dict[int, StreamChannel] = {}
        self._last_refresh = time.monotonic()

    def watch(self, channel: StreamChannel) -> None:
        self.watchers[channel.id] += 1
        self.rooms[channel.id] = channel

    def unwatch(self, channel: StreamChannel) -> None:
        self.watchers[channel.id] -= 1
        if self.watchers[channel.id] <= 0:
            del self.watchers[channel.id]
            self.rooms.pop(channel.id, None)

    async def join(self, channel: StreamChannel, author: Author) -> str:
        connection = uuid.uuid4().hex
        self.connections[connection] = (channel, author)
        await database_sync_to_async(_insert)(connection, channel.id, author)
        await self.announce(channel)
        return connection

    async def leave(self, connection: str) -> None:
        entry = self.connections.pop(connection, None)
        await database_sync_to_async(_delete)(connection)
        if entry is not None:
            await self.announce(entry[0])

    async def announce(self, channel: StreamChannel) -> None:
        """Send the room's current list to every subscriber, in every process."""
        payload = await database_sync_to_async(snapshot)(channel.id)
        await fan_out_ephemeral(Channel(pk=channel.id, slug=channel.slug), payload, event=PRESENCE_EVENT)

    async def tick(self, now: float) -> None:
        if now - self._last_refresh < conf.PRESENCE_REFRESH_SECONDS or not self.rooms:
            return
        self._last_refresh = now
        # Any process with readers in a room expires a dead process's rows
        # there, so the people still reading see it.
        mine = {connection: (room.id, author) for connection, (room, author) in self.connections.items()}
        changed = await database_sync_to_async(_refresh)(mine, list(self.rooms))
        for channel_id in changed:
            room = self.rooms.get(channel_id)
            if room is not None:
                await self.announce(room)


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
        await _tracker.tick(now)


_leaving: set[asyncio.Task[None]] = set()


class Membership:
    """One stream in one room: listed at once if its reader is known, gone when the stream closes."""

    def __init__(self, channel: StreamChannel, author: Author | None) -> None:
        self.channel = channel
        tracker = get_tracker()
        tracker.watch(channel)
        self._joining = detached(tracker.join(channel, author)) if author is not None else None

    def leave(self) -> None:
        get_tracker().unwatch(self.channel)
        if self._joining is None:
            return
        task = detached(self._leave())
        # The loop keeps only weak references to tasks: hold this one to its end.
        _leaving.add(task)
        task.add_done_callback(_leaving.discard)

    async def _leave(self) -> None:
        assert self._joining is not None
        try:
            connection = await self._joining
        except Exception:
            logger.warning("Joining a room's presence failed; nothing to leave.", exc_info=True)
            return
        try:
            await get_tracker().leave(connection)
        except Exception:
            # The row expires after three refresh intervals anyway.
            logger.warning("Leaving a room's presence failed.", exc_info=True)


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
