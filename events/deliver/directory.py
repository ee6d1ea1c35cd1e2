"""Admitting an anonymous live reader of public channels without the database (issue 16).

Opening a stream normally costs a thread hop and a query (and, on SQLite with
``CONN_MAX_AGE=0``, a new database connection): 64 % of the server's time while
5,000 streams open (docs/performance.md). Most opens after a restart are
anonymous readers of public channels with no position to resume. For them the
process keeps what the last database read saw of each public channel (an
admission, or the relay's poll, which re-reads the rows of every channel with a
feed), for at most :func:`max_age` seconds, and takes the start position from
the channel's live feed. The relay's poll keeps the feed's visibility and epoch
current, so a channel made private or deactivated stops being admitted here
within one poll, and its readers are ended by the access sweep as before.

Anything else (a token, a session, a key, a cursor, a rewind, an unknown, hidden,
chat or cold channel) goes through ``authorize`` and the database, which also
gives every refusal (docs/security.md: hidden channels answer like unknown ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from events.conf import conf
from events.models import Channel, Visibility


def max_age() -> float:
    """How old an entry may be: two poll intervals.

    The poll runs on the one-second tick every ``RELAY_POLL_SECONDS`` and may come a
    tick late; twice the interval keeps an entry the poll refreshes fresh between
    polls, so opens do not all miss (and queue for the database) when it lapses.
    """
    return 2 * conf.RELAY_POLL_SECONDS


class ChannelDirectory:
    """Public channels by slug, as the database last admitted them in this process."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Channel]] = {}

    def remember(self, channels: Iterable[Channel], now: float | None = None) -> None:
        """Keep the public, active, non-chat ``channels`` (chat readers need an identity: the database)."""
        at = time.monotonic() if now is None else now
        for channel in channels:
            if channel.visibility == Visibility.PUBLIC and channel.is_active and not channel.is_chat:
                self._entries[channel.slug] = (at, channel)
            else:
                self._entries.pop(channel.slug, None)

    def lookup(self, slugs: list[str], *, max_age: float, now: float | None = None) -> list[Channel] | None:
        """Every channel of ``slugs``, in order, if each was admitted within ``max_age`` seconds; else None."""
        at = time.monotonic() if now is None else now
        found = []
        for slug in slugs:
            entry = self._entries.get(slug)
            if entry is None or at - entry[0] > max_age:
                return None
            found.append(entry[1])
        return found

    def forget(self, slug: str) -> None:
        self._entries.pop(slug, None)
