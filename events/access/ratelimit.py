"""Fixed-window rate limits on Django's cache (shared through Redis when REDIS_URL is set).

Every limit is a :class:`Rate`, counted with :func:`count` (or looked at, without
counting, with :func:`check`). Publishing has two: each API key and each staff user
may publish ``PUSHSITE_PUBLISH_RATE_MESSAGES`` per ``PUSHSITE_PUBLISH_RATE_SECONDS``,
whichever way they publish (the JSON API, its fast path, each part of a streamed
publish); chat rooms define theirs (events/chat/rules.py) and count them here too.

When the cache does not answer, limits fail open, and quickly (issue 15): while
one cache call has been waiting longer than ``CACHE_SLOW_SECONDS``, and for
``CACHE_RETRY_SECONDS`` after a call failed, the others skip the cache instead of
each waiting out its socket timeout on a hung Redis; then one request tries again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.core.cache import cache

from events.conf import conf
from events.exceptions import RateLimited

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "pushsite:ratelimit"
# A healthy cache answers in about a millisecond.
CACHE_SLOW_SECONDS = 0.1
CACHE_RETRY_SECONDS = 5.0


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
    stored = _breaker.call(rate.scope, lambda: cache.get(_key(rate.scope, ident, int(now // window))))
    if isinstance(stored, Skipped):
        return
    if int(stored or 0) >= limit:
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
    used = _breaker.call(scope, lambda: _count(key, math.ceil(window) + 1))
    if isinstance(used, Skipped):
        return
    if used > limit:
        raise _refusal(detail, now, window)


class Skipped:
    """What :meth:`CacheBreaker.call` returns instead of the cache's answer when the limit is not checked."""


_SKIPPED = Skipped()


class CacheBreaker:
    """Calls the cache unless it is hung or down; then the limits fail open without waiting.

    Called from many worker threads. The healthy path takes one uncontended lock
    around each call, to know how long the calls in progress have been waiting.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # clock() until which the cache is skipped; 0.0 while it answers.
        self._down_until = 0.0
        # When each call in progress started, by a number given to the call.
        self._calls: dict[int, float] = {}
        self._tokens = itertools.count()

    def call(self, scope: str, operation: Callable[[], T]) -> T | Skipped:
        """``operation()``'s result, or _SKIPPED when the cache is skipped or fails (fail open)."""
        with self._lock:
            now = self._clock()
            # The first call in the dict is the oldest (insertion order).
            if self._calls and now - next(iter(self._calls.values())) > CACHE_SLOW_SECONDS:
                return _SKIPPED  # a call is stuck: do not queue up behind it
            if self._down_until:
                if now < self._down_until:
                    return _SKIPPED
                # This caller tries the cache; the others go on skipping until it is back.
                self._down_until = now + CACHE_RETRY_SECONDS
            token = next(self._tokens)
            self._calls[token] = now
        try:
            result = operation()
        except Exception:
            # The shared cache (Redis) is down: let the request through rather
            # than refuse every publish and post while it is away.
            with self._lock:
                self._down_until = self._clock() + CACHE_RETRY_SECONDS
            logger.warning("Rate limit %s not checked: the cache is unavailable.", scope, exc_info=True)
            return _SKIPPED
        else:
            if self._down_until:
                with self._lock:
                    self._down_until = 0.0
            return result
        finally:
            with self._lock:
                del self._calls[token]


_breaker = CacheBreaker()


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
