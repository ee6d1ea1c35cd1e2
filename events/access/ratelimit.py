"""Fixed-window rate limits on Django's cache (shared through Redis when REDIS_URL is set).

Every limit is a :class:`Rate`, counted with :func:`count` (or looked at, without
counting, with :func:`check`). Publishing has two: each API key and each staff user
may publish ``PUSHSITE_PUBLISH_RATE_MESSAGES`` per ``PUSHSITE_PUBLISH_RATE_SECONDS``,
whichever way they publish (the JSON API, its fast path, each part of a streamed
publish); chat rooms define theirs (events/chat/rules.py) and count them here too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache

from events.conf import conf
from events.exceptions import RateLimited

logger = logging.getLogger(__name__)

KEY_PREFIX = "pushsite:ratelimit"


@dataclass(frozen=True)
class Rate:
    """A named limit: ``messages()`` per ``seconds()`` for each identity; ``detail`` starts a refusal."""

    scope: str
    messages: Callable[[], int]
    seconds: Callable[[], float]
    detail: str


PUBLISH_BY_KEY = Rate(
    "publish-key",
    lambda: conf.PUBLISH_RATE_MESSAGES,
    lambda: conf.PUBLISH_RATE_SECONDS,
    "This API key is publishing too fast.",
)
PUBLISH_BY_USER = Rate(
    "publish-user",
    lambda: conf.PUBLISH_RATE_MESSAGES,
    lambda: conf.PUBLISH_RATE_SECONDS,
    "This user is publishing too fast.",
)


def count(rate: Rate, ident: str) -> None:
    """Count one request of ``ident`` against ``rate``; RateLimited (429) once it is over."""
    hit(rate.scope, ident, limit=rate.messages(), window=rate.seconds(), detail=rate.detail)


def check(rate: Rate, ident: str) -> None:
    """RateLimited if ``ident`` has no request left in this window of ``rate``; counts nothing."""
    limit, window = rate.messages(), rate.seconds()
    if limit <= 0 or window <= 0:
        return
    now = time.time()
    try:
        used = int(cache.get(_key(rate.scope, ident, int(now // window))) or 0)
    except Exception:
        logger.warning("Rate limit %s not checked: the cache is unavailable.", rate.scope, exc_info=True)
        return
    if used >= limit:
        raise _refusal(rate.detail, now, window)


def hit(scope: str, ident: str, *, limit: int, window: float, detail: str) -> None:
    """Count one request of ``ident`` in ``scope``; raise RateLimited once it is over ``limit`` per ``window``.

    A fixed window: cheap (one atomic increment) and shared by every process
    using the same cache. A burst across a window boundary can reach twice the
    limit, which is fine for flood control.
    """
    if limit <= 0 or window <= 0:
        return
    now = time.time()
    key = _key(scope, ident, int(now // window))
    try:
        used = _count(key, math.ceil(window) + 1)
    except Exception:
        # The shared cache (Redis) is down: let the request through rather
        # than refuse every publish and post while it is away.
        logger.warning("Rate limit %s not checked: the cache is unavailable.", scope, exc_info=True)
        return
    if used > limit:
        raise _refusal(detail, now, window)


def _key(scope: str, ident: str, window_index: int) -> str:
    # Hashed: identities hold spaces and any Unicode (guest nicknames), which
    # some cache backends refuse in keys.
    digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{KEY_PREFIX}:{scope}:{digest}:{window_index}"


def _refusal(detail: str, now: float, window: float) -> RateLimited:
    retry_after = max(1, math.ceil((int(now // window) + 1) * window - now))
    return RateLimited(f"{detail} Try again in {retry_after} s.", retry_after=retry_after)


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
