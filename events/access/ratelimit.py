"""Fixed-window rate limits on Django's cache (shared through Redis when REDIS_URL is set).

Every limit is a :class:`Rate`, counted with :func:`count` (or looked at, without
counting, with :func:`check`). Publishing has two: each API key and each staff user
may publish ``PUSHSITE_PUBLISH_RATE_MESSAGES`` per ``PUSHSITE_PUBLISH_RATE_SECONDS``,
whichever way they publish (the JSON API, its fast path, each part of a streamed
publish); chat rooms define theirs (events/chat/rules.py) and count them here too.

Publish rates are counted in this process and reserved from the shared counter
in blocks (issue 17): a process takes ``block_size(limit)`` at once (at most 50,
a tenth of the limit, at least 1) with one ``incr``, and spends them without
asking the cache again; a block's places past the limit are not granted. So the
limit holds exactly across processes, never exceeded, and its tolerance runs the
other way: a process's unspent reservation (under a block, or a block per thread
reserving at the same moment) is lost to the others, which may be refused up to
that many publishes early in the window; unspent reservations lapse when the
window ends. One process alone is exact. At the default 1000 per 10 s a publish
costs the cache one call per 50 publishes, instead of two (three Redis round
trips) per publish; a key over its limit is refused with no cache call until the
window ends. Chat rates, a few posts a minute, stay one count per post (``hit``).

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
    # Counted locally from blocks reserved in the shared counter (see the module's docstring).
    reserved: bool = False


PUBLISH_BY_KEY = Rate(
    "publish-key",
    lambda: conf.PUBLISH_RATE_MESSAGES,
    lambda: conf.PUBLISH_RATE_SECONDS,
    "This API key is publishing too fast.",
    reserved=True,
)
PUBLISH_BY_USER = Rate(
    "publish-user",
    lambda: conf.PUBLISH_RATE_MESSAGES,
    lambda: conf.PUBLISH_RATE_SECONDS,
    "This user is publishing too fast.",
    reserved=True,
)


def count_staff_publish(user_pk: object) -> None:
    """Count one publish by a signed-in user, on every road a user publishes by.

    The JSON API (session), the admin's "send test message", the announcement
    workflow and chat deletions share PUBLISH_BY_USER, so a staff account cannot exceed its rate by
    switching from the API to the admin (they were uncounted there).
    """
    count(PUBLISH_BY_USER, str(user_pk))


def count(rate: Rate, ident: str) -> None:
    """Count one request of ``ident`` against ``rate``; RateLimited (429) once it is over."""
    if rate.reserved:
        _reservations.spend(rate, ident)
    else:
        hit(rate.scope, ident, limit=rate.messages(), window=rate.seconds(), detail=rate.detail)


def count_held(rate: Rate, ident: str) -> bool:
    """Count one request from what this process holds, with no I/O (safe on the event loop).

    False when that needs the cache (then :func:`count`, in a thread); RateLimited
    once the window is full. A rate that is not reserved is always False.
    """
    return rate.reserved and _reservations.spend_held(rate, ident)


def check(rate: Rate, ident: str) -> None:
    """RateLimited if ``ident`` has no request left in this window of ``rate``; counts nothing."""
    limit, window = rate.messages(), rate.seconds()
    if limit <= 0 or window <= 0:
        return
    now = time.time()
    if rate.reserved:
        held = _reservations.held(rate.scope, ident, limit, int(now // window))
        if held is True:
            return
        if held is False:
            raise _refusal(rate.detail, now, window)
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


def block_size(limit: int) -> int:
    """How many publishes a process reserves from the shared counter at once."""
    return max(1, min(limit // 10, 50))


@dataclass
class _Held:
    """This process's part of one identity's window: places reserved and not yet spent."""

    window_index: int
    limit: int
    ends: float
    left: int = 0
    # The shared counter reached the limit: refuse here until the window ends.
    full: bool = False


class Reservations:
    """Counts reserved rates in this process, from blocks taken in the shared counter.

    Called from many worker threads (events/publish/writers.py, the streaming
    publish's): the local accounting is under one lock, the cache call outside it.
    Threads that find nothing left at the same moment each reserve a block.
    """

    # Identities remembered before the ones of ended windows are dropped.
    PRUNE_AT = 1024

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], _Held] = {}

    def spend(self, rate: Rate, ident: str) -> None:
        """Count one publish of ``ident``: from this process's block, else from a new one."""
        if self.spend_held(rate, ident):
            return
        limit, window = rate.messages(), rate.seconds()
        now = self._clock()
        index = int(now // window)
        block = block_size(limit)
        key = _key(rate.scope, ident, index)
        total = _breaker.call(rate.scope, lambda: _reserve(key, block, math.ceil(window) + 1))
        if isinstance(total, Skipped):
            return  # fail open, as hit() does
        # This block holds the counter's places total-block+1 .. total; those up to the limit are ours.
        granted = max(0, min(block, limit - (total - block)))
        with self._lock:
            held = self._current(rate.scope, ident, limit, index, window)
            if total >= limit:
                held.full = True
            if granted:
                held.left += granted - 1
                return
        raise _refusal(rate.detail, now, window)

    def spend_held(self, rate: Rate, ident: str) -> bool:
        """Count one publish from this process's block, without the cache; False: none is held."""
        limit, window = rate.messages(), rate.seconds()
        if limit <= 0 or window <= 0:
            return True
        now = self._clock()
        with self._lock:
            held = self._current(rate.scope, ident, limit, int(now // window), window)
            if held.left:
                held.left -= 1
                return True
            if held.full:
                raise _refusal(rate.detail, now, window)
        return False

    def held(self, scope: str, ident: str, limit: int, index: int) -> bool | None:
        """True: this process holds a place for ``ident``; False: its window is full; None: ask the cache."""
        with self._lock:
            held = self._held.get((scope, ident))
            if held is None or held.window_index != index or held.limit != limit:
                return None
            if held.left:
                return True
            return False if held.full else None

    def clear(self) -> None:
        """Forget every reservation (tests that empty the cache start from zero here too)."""
        with self._lock:
            self._held.clear()

    def _current(self, scope: str, ident: str, limit: int, index: int, window: float) -> _Held:
        # Called under the lock. A new window, or a changed limit, starts afresh:
        # what was reserved in the last one has lapsed with it.
        held = self._held.get((scope, ident))
        if held is None or held.window_index != index or held.limit != limit:
            if held is None and len(self._held) >= self.PRUNE_AT:
                self._prune(index * window)
            held = self._held[(scope, ident)] = _Held(index, limit, (index + 1) * window)
        return held

    def _prune(self, now: float) -> None:
        # Ended windows go; should that not be enough, everything does: the
        # shared counter still holds the count, only unspent places lapse early.
        for name in [name for name, held in self._held.items() if held.ends <= now]:
            del self._held[name]
        if len(self._held) >= self.PRUNE_AT:
            self._held.clear()


_reservations = Reservations()


def forget_reservations() -> None:
    """Drop this process's reserved places (for tests that clear the cache)."""
    _reservations.clear()


def _key(scope: str, ident: str, window_index: int) -> str:
    # Hashed: identities hold spaces and any Unicode (guest nicknames), which
    # some cache backends refuse in keys.
    digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{KEY_PREFIX}:{scope}:{digest}:{window_index}"


def _refusal(detail: str, now: float, window: float) -> RateLimited:
    retry_after = max(1, math.ceil((int(now // window) + 1) * window - now))
    return RateLimited(f"{detail} Try again in {retry_after} s.", retry_after=retry_after)


def _reserve(key: str, block: int, timeout: int) -> int:
    """Add ``block`` to the shared counter at ``key``; its new total.

    One call once the window's counter exists (Redis: EXISTS and INCRBY); the
    window's first block creates it with ``add``.
    """
    try:
        return int(cache.incr(key, block))
    except ValueError:
        pass
    if cache.add(key, block, timeout=timeout):
        return block
    try:
        return int(cache.incr(key, block))
    except ValueError:
        # Expired in between: the window is over; count this block as its first.
        cache.add(key, block, timeout=timeout)
        return block


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
