"""The fixed-window rate limiter on Django's cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.http import HttpResponse

from events.access import ratelimit
from events.exceptions import RateLimited
from events.http.responses import from_exception


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


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
