"""Fixed-window rate limits on Django's cache (shared through Redis when REDIS_URL is set)."""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.core.cache import cache

from events.exceptions import RateLimited

logger = logging.getLogger(__name__)

KEY_PREFIX = "pushsite:ratelimit"


def hit(scope: str, ident: str, *, limit: int, window: float, detail: str) -> None:
    """Count one request of ``ident`` in ``scope``; raise RateLimited once it is over ``limit`` per ``window``.

    A fixed window: cheap (one atomic increment) and shared by every process
    using the same cache. A burst across a window boundary can reach twice the
    limit, which is fine for flood control.
    """
    if limit <= 0 or window <= 0:
        return
    now = time.time()
    window_index = int(now // window)
    # Hashed: identities hold spaces and any Unicode (guest nicknames), which
    # some cache backends refuse in keys.
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    key = f"{KEY_PREFIX}:{scope}:{digest}:{window_index}"
    try:
        count = _count(key, math.ceil(window) + 1)
    except Exception:
        # The shared cache (Redis) is down: let the request through rather
        # than refuse every publish and post while it is away.
        logger.warning("Rate limit %s not checked: the cache is unavailable.", scope, exc_info=True)
        return
    if count > limit:
        retry_after = max(1, math.ceil((window_index + 1) * window - now))
        raise RateLimited(f"{detail} Try again in {retry_after} s.", retry_after=retry_after)


def _count(key: str, timeout: int) -> int:
    # add() is a no-op when the key exists; incr() is atomic in every backend
    # Pushsite uses (LocMemCache under a lock, Redis INCR).
    cache.add(key, 0, timeout=timeout)
    try:
        return int(cache.incr(key))
    except ValueError:
        # The key expired between add() and incr(): this is its first hit.
        cache.add(key, 1, timeout=timeout)
        return 1
