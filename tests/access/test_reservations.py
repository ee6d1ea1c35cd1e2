"""Publish rates counted per process from blocks reserved in the shared counter (issue 17)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache

from events.access import ratelimit
from events.exceptions import RateLimited
from tests.support.services import RedisServer, redis_binary

# Rate-limit counters and reservations start at zero (tests/support/fixtures.py).
pytestmark = pytest.mark.usefixtures("empty_cache")


class CountingCache:
    """Django's cache, counting the calls the rate limiter makes on it."""

    def __init__(self, inner: BaseCache) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def add(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.append("add")
        return self.inner.add(*args, **kwargs)

    def incr(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append("incr")
        return self.inner.incr(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("get")
        return self.inner.get(*args, **kwargs)


def rate(limit: int, seconds: float = 60.0) -> ratelimit.Rate:
    return ratelimit.Rate("t", lambda: limit, lambda: seconds, "Slow down.", reserved=True)


def new_process() -> ratelimit.Reservations:
    """One process's reservations, all in the middle of one window (a test never straddles two)."""
    return ratelimit.Reservations(clock=lambda: 6_000_030.0)


@pytest.fixture
def patient_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """No skipping the cache because a call was slow: a loaded machine must not fail these open."""
    monkeypatch.setattr(ratelimit, "CACHE_SLOW_SECONDS", 60.0)


def spent(process: ratelimit.Reservations, limit_rate: ratelimit.Rate, ident: str = "a") -> bool:
    """One publish: True if counted, False if refused."""
    try:
        process.spend(limit_rate, ident)
    except RateLimited:
        return False
    return True


def test_block_sizes() -> None:
    assert [ratelimit.block_size(limit) for limit in (1, 5, 9, 10, 100, 499, 1000, 100_000)] == [
        1,
        1,
        1,
        1,
        10,
        49,
        50,
        50,
    ]


@pytest.mark.parametrize("limit", [1, 5, 37, 1000])
def test_one_process_is_exact(limit: int) -> None:
    process = new_process()
    assert [spent(process, rate(limit)) for _ in range(limit + 3)] == [True] * limit + [False] * 3


@pytest.mark.parametrize("limit", [7, 100, 1000, 1234])
def test_two_processes_sharing_the_cache_never_exceed_the_limit(limit: int) -> None:
    shared = rate(limit)
    a, b = new_process(), new_process()
    order = random.Random(limit)
    counted = {a: 0, b: 0}
    refused_first_at: int | None = None
    open_ = [a, b]
    while open_:
        process = order.choice(open_)
        if spent(process, shared):
            counted[process] += 1
        else:
            open_.remove(process)
            if refused_first_at is None:
                refused_first_at = sum(counted.values())
    # Never over the limit; every place reserved was spent once both ran out.
    assert sum(counted.values()) == limit
    # The first refusal came at most one block early (the other process's unspent places).
    assert refused_first_at is not None
    assert refused_first_at >= limit - ratelimit.block_size(limit)


@pytest.mark.usefixtures("patient_breaker")
def test_threads_of_two_processes_never_exceed_the_limit() -> None:
    limit = 1000
    shared = rate(limit)
    processes = [new_process(), new_process()]
    counted = [0] * 8
    start = threading.Barrier(8)

    def publish(number: int) -> None:
        process = processes[number % 2]
        start.wait(10)
        for _ in range(400):
            if spent(process, shared):
                counted[number] += 1

    threads = [threading.Thread(target=publish, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    # 3,200 attempts: each process spends all it reserved, and the two together exactly the limit.
    assert sum(counted) == limit


def test_a_thousand_publishes_cost_a_few_cache_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingCache(cache)
    monkeypatch.setattr(ratelimit, "cache", counting)
    process = new_process()
    for _ in range(1000):
        process.spend(rate(100_000), "a")
    # One incr per block of 50 (the window's first finds no counter and adds it):
    # 21 calls, where counting each publish took 2,000.
    assert counting.calls == ["incr", "add"] + ["incr"] * 19
    # A key over its limit costs no cache call for the rest of the window.
    counting.calls.clear()
    small = rate(3)
    for _ in range(3):
        process.spend(small, "b")
    refused = [spent(process, small, "b") for _ in range(100)]
    assert refused == [False] * 100
    assert len(counting.calls) == 4  # incr (missing), add, then two incr of one


def test_reservations_lapse_when_the_window_turns() -> None:
    now = [6_000_000.0]
    process = ratelimit.Reservations(clock=lambda: now[0])
    limit = rate(100)  # blocks of 10
    assert spent(process, limit)
    first = ratelimit._key("t", "a", int(now[0] // 60))
    assert cache.get(first) == 10
    for _ in range(99):
        assert spent(process, limit)
    assert not spent(process, limit)
    assert cache.get(first) == 100
    now[0] += 60  # the next window: a fresh count; the last one's places are gone
    second = ratelimit._key("t", "a", int(now[0] // 60))
    assert [spent(process, limit) for _ in range(100)] == [True] * 100
    assert not spent(process, limit)
    assert cache.get(second) == 100
    # Unspent places of a window are not carried into the next one.
    now[0] += 60
    assert spent(process, limit)
    now[0] += 60
    assert spent(process, limit)
    assert cache.get(ratelimit._key("t", "a", int(now[0] // 60))) == 10


def test_check_counts_what_this_process_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    # check() reads the real clock: an hour's window, which a test of milliseconds does not straddle.
    limit = rate(100, seconds=3600)
    here, elsewhere = ratelimit.Reservations(), ratelimit.Reservations()
    monkeypatch.setattr(ratelimit, "_reservations", here)
    for _ in range(91):  # ten blocks: the shared counter is at the limit, 9 places held here
        here.spend(limit, "a")
    ratelimit.check(limit, "a")  # counts nothing
    assert [spent(here, limit) for _ in range(10)] == [True] * 9 + [False]
    with pytest.raises(RateLimited):
        ratelimit.check(limit, "a")
    monkeypatch.setattr(ratelimit, "_reservations", elsewhere)
    with pytest.raises(RateLimited) as raised:
        ratelimit.check(limit, "a")
    assert raised.value.detail.startswith("Slow down. Try again in ")
    assert not spent(elsewhere, limit)


def test_the_publish_rates_are_reserved_and_chat_rates_are_not() -> None:
    assert ratelimit.PUBLISH_BY_KEY.reserved
    assert ratelimit.PUBLISH_BY_USER.reserved
    assert not ratelimit.Rate("chat", lambda: 5, lambda: 60.0, "Slow down.").reserved


@pytest.fixture(scope="module")
def redis_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCache]:
    """Django's RedisCache on a redis-server of this module's own, as pushsite/settings.py configures it."""
    server = RedisServer(redis_binary(), Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield RedisCache(server.url, {"KEY_PREFIX": "pushsite", "OPTIONS": {"socket_timeout": 1}})
    finally:
        server.stop()


@pytest.mark.usefixtures("patient_breaker")
def test_on_redis_threads_of_two_processes_count_exactly_with_few_calls(
    redis_cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingCache(redis_cache)
    monkeypatch.setattr(ratelimit, "cache", counting)
    limit = 2000
    shared = rate(limit)
    processes = [new_process(), new_process()]
    counted = itertools.count()
    refused = itertools.count()

    def publish(number: int) -> None:
        for _ in range(600):
            if spent(processes[number % 2], shared, "redis"):
                next(counted)
            else:
                next(refused)

    threads = [threading.Thread(target=publish, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert next(counted) == limit
    assert next(refused) == 3600 - limit
    # Blocks of 50: about 40 reservations (a few more when threads reserve at once,
    # plus each process's one that finds the window full); refusals after that cost none.
    assert len(counting.calls) <= 60


def test_count_held_spends_the_block_without_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingCache(cache)
    monkeypatch.setattr(ratelimit, "cache", counting)
    limit = rate(20, seconds=3600)  # blocks of 2
    assert not ratelimit.count_held(limit, "a")  # nothing held yet: ask the cache
    assert counting.calls == []
    ratelimit.count(limit, "a")  # reserves 2, spends 1
    assert ratelimit.count_held(limit, "a")
    assert not ratelimit.count_held(limit, "a")
    assert len(counting.calls) == 2  # incr (no counter yet), add
    for _ in range(18):
        if not ratelimit.count_held(limit, "a"):
            ratelimit.count(limit, "a")
    with pytest.raises(RateLimited):
        ratelimit.count_held(limit, "a")  # full: refused with no cache call
    assert len(counting.calls) == 11
    assert not ratelimit.count_held(ratelimit.Rate("c", lambda: 5, lambda: 60.0, "Slow down."), "a")
