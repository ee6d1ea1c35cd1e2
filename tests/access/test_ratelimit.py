"""The fixed-window rate limiter on Django's cache."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.core.cache import cache
from django.http import HttpResponse

from events.access import ratelimit
from events.exceptions import RateLimited
from events.http.responses import from_exception

# Rate-limit counters and reservations start at zero (tests/support/fixtures.py).
pytestmark = pytest.mark.usefixtures("empty_cache")


def test_the_fixed_window_counts_per_identity() -> None:
    for _ in range(3):
        ratelimit.hit("t", "a", limit=3, window=60, detail="Slow down.")
    with pytest.raises(RateLimited) as raised:
        ratelimit.hit("t", "a", limit=3, window=60, detail="Slow down.")
    assert raised.value.status == 429
    assert raised.value.detail.startswith("Slow down. Try again in ")
    assert 1 <= raised.value.retry_after <= 60
    ratelimit.hit("t", "b", limit=3, window=60, detail="Slow down.")
    ratelimit.hit("other-scope", "a", limit=3, window=60, detail="Slow down.")


def test_identities_with_any_characters_are_fine_as_keys() -> None:
    ratelimit.hit("t", "guest:Zoë the 🦊 / with spaces", limit=1, window=60, detail="Slow down.")
    with pytest.raises(RateLimited):
        ratelimit.hit("t", "guest:Zoë the 🦊 / with spaces", limit=1, window=60, detail="Slow down.")


def test_a_zero_limit_turns_the_check_off() -> None:
    for _ in range(10):
        ratelimit.hit("t", "a", limit=0, window=60, detail="Slow down.")


def test_the_429_answer_says_when_to_retry() -> None:
    response: HttpResponse = from_exception(RateLimited("Slow down. Try again in 7 s.", retry_after=7))
    assert response.status_code == 429
    assert response["Retry-After"] == "7"


class HungCache:
    """A cache whose every call fails, as Django's Redis cache does when Redis does not answer."""

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: object, **kwargs: object) -> None:
        self.calls += 1
        raise TimeoutError("Timeout reading from socket")

    add = incr = get = _fail


@pytest.mark.parametrize("reserved", [False, True], ids=["counted", "reserved"])
def test_a_failing_cache_is_skipped_for_a_while_then_tried_again(
    monkeypatch: pytest.MonkeyPatch, reserved: bool
) -> None:
    now = [1000.0]
    hung = HungCache()
    monkeypatch.setattr(ratelimit, "cache", hung)
    monkeypatch.setattr(ratelimit, "_breaker", ratelimit.CacheBreaker(clock=lambda: now[0]))
    rate = ratelimit.Rate("t", lambda: 1, lambda: 60.0, "Slow down.", reserved=reserved)
    # Fails open, and only the first request waits on the cache.
    for _ in range(5):
        ratelimit.count(rate, "a")
        ratelimit.check(rate, "a")
    assert hung.calls == 1
    now[0] += ratelimit.CACHE_RETRY_SECONDS
    ratelimit.count(rate, "a")  # one request tries again; still failing
    ratelimit.count(rate, "a")
    assert hung.calls == 2
    # Back: limits count again from the next try on.
    monkeypatch.setattr(ratelimit, "cache", cache)
    now[0] += ratelimit.CACHE_RETRY_SECONDS
    ratelimit.count(rate, "a")
    with pytest.raises(RateLimited):
        ratelimit.count(rate, "a")


def test_while_a_cache_call_hangs_the_others_do_not_wait_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    class FrozenCache:
        def add(self, *args: object, **kwargs: object) -> None:
            calls.append("add")
            entered.set()
            release.wait(10)
            raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(ratelimit, "cache", FrozenCache())
    monkeypatch.setattr(ratelimit, "_breaker", ratelimit.CacheBreaker(clock=lambda: now[0]))
    rate = ratelimit.Rate("t", lambda: 1, lambda: 60.0, "Slow down.")
    stuck = threading.Thread(target=ratelimit.count, args=(rate, "a"))
    stuck.start()
    assert entered.wait(10)
    now[0] += ratelimit.CACHE_SLOW_SECONDS / 2
    with pytest.raises(AssertionError):  # not slow yet: this one would wait on the cache too
        with_timeout(lambda: ratelimit.count(rate, "b"), seconds=0.2)
    now[0] += ratelimit.CACHE_SLOW_SECONDS
    # Slow now: everyone else skips the cache (fails open) at once.
    with_timeout(lambda: ratelimit.count(rate, "c"), seconds=5)
    assert calls == ["add", "add"]
    release.set()
    stuck.join(10)


def with_timeout(call: Callable[[], None], *, seconds: float) -> None:
    """Run ``call`` in a thread; AssertionError if it has not returned within ``seconds``."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting"
