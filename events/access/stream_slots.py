"""Open streams per client address, counted across every server process when Redis is there.

Each process counts its own streams first (synchronously, so a burst on one
process cannot overshoot: events/deliver/endpoint.py). With ``REDIS_URL`` set,
every stream also holds a *lease* in one sorted set per address, scored by when
the lease lapses: taking one is a single Lua call that drops lapsed leases,
counts and adds, so simultaneous connects on several processes never get more
than ``PUSHSITE_MAX_STREAMS_PER_IP`` in all. The tick renews this process's
leases, and a process that dies loses its leases within LEASE_SECONDS.

Redis trouble never refuses a reader: the per-process count still applies, and
the shared one fails open (logged), as the rate limits do.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.asyncio import Redis
from redis.exceptions import RedisError

from events.runtime.tick import Every
from events.signals import tick

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

logger = logging.getLogger(__name__)

# A lease the tick stops renewing (its process died) lapses after this long.
LEASE_SECONDS = 30.0
RENEW_SECONDS = LEASE_SECONDS / 3
# The longest a new stream waits for Redis before the shared count is skipped.
TIMEOUT_SECONDS = 0.5
KEY_PREFIX = "pushsite:streams:"

# Drop lapsed leases, count, take one if there is room: one atomic step in Redis.
_TAKE = """
local key, now, limit, member, lapse = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, lapse, member)
redis.call('EXPIRE', key, math.ceil(lapse - now) + 1)
return 1
"""


class SharedSlots:
    """This process's leases in Redis, one per open stream."""

    def __init__(self, url: str) -> None:
        self.client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._take: AsyncScript = self.client.register_script(_TAKE)
        self.held: dict[str, set[str]] = {}  # address -> this process's lease ids

    async def take(self, address: str, limit: int) -> str | None:
        """A lease id for one more stream from ``address``, or None when it holds ``limit`` already."""
        lease = uuid.uuid4().hex
        now = time.time()
        taken = await self._take(keys=[KEY_PREFIX + address], args=[now, limit, lease, now + LEASE_SECONDS])
        if not taken:
            return None
        self.held.setdefault(address, set()).add(lease)
        return lease

    async def give_back(self, address: str, lease: str) -> None:
        leases = self.held.get(address)
        if leases is not None:
            leases.discard(lease)
            if not leases:
                del self.held[address]
        await self.client.zrem(KEY_PREFIX + address, lease)

    async def renew(self) -> None:
        """Push back the lapse of every lease this process holds (``XX``: never revive a dropped one)."""
        lapse = time.time() + LEASE_SECONDS
        async with self.client.pipeline(transaction=False) as pipe:
            for address, leases in self.held.items():
                pipe.zadd(KEY_PREFIX + address, dict.fromkeys(leases, lapse), xx=True)
                pipe.expire(KEY_PREFIX + address, int(LEASE_SECONDS) + 1)
            await pipe.execute()


_slots: SharedSlots | None = None
_slots_loop: asyncio.AbstractEventLoop | None = None


# Why: every stream open asks for the shared counter, and most deployments have no
# Redis; the URL is read once, not through Django's lazy settings per open (issue 16).
_url: str | None = None


def _redis_url() -> str:
    """The first of ``REDIS_URL``'s addresses, "" without Redis; read again after the setting changes."""
    global _url
    if _url is None:
        _url = settings.REDIS_URL.split(",")[0].strip()
    return _url


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    global _url
    if setting == "REDIS_URL":
        _url = None


def shared_slots() -> SharedSlots | None:
    """This event loop's shared counter, or None without Redis (one process: its own count is all)."""
    global _slots, _slots_loop
    url = _redis_url()
    if not url:
        return None
    loop = asyncio.get_running_loop()
    if _slots is None or _slots_loop is not loop:
        _slots, _slots_loop = SharedSlots(url), loop
    return _slots


async def take(address: str, limit: int) -> tuple[bool, str | None]:
    """Whether ``address`` may open one more stream across all processes, and the lease to give back."""
    slots = shared_slots()
    if slots is None:
        return True, None
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            lease = await slots.take(address, limit)
    except (TimeoutError, OSError, RedisError):
        logger.warning("Could not count streams per address in Redis; counting this process only.")
        return True, None
    return lease is not None, lease


async def give_back(address: str, lease: str) -> None:
    slots = shared_slots()
    if slots is None:
        return
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await slots.give_back(address, lease)
    except (TimeoutError, OSError, RedisError):
        # The lease lapses by itself within LEASE_SECONDS.
        logger.warning("Could not give back a stream lease in Redis; it lapses within %ss.", LEASE_SECONDS)


_renewal = Every(RENEW_SECONDS)


@receiver(tick, dispatch_uid="pushsite-stream-slot-leases")
async def renew_on_tick(sender: Any, now: float, **kwargs: Any) -> None:
    if _slots is None or not _slots.held or not _renewal.due(now):
        return
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await _slots.renew()
    except (TimeoutError, OSError, RedisError):
        logger.warning("Could not renew this process's stream leases in Redis; retrying.")
