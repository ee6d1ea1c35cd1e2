"""Bounded waiting for conditions that have no event to await.

``eventually`` polls state in another process (a server, a database); ``until`` yields
to this event loop while callbacks in the same loop change the state a test watches.
Both fail naming what they waited for and what they last saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, within: float, what: str
) -> T:
    """Poll ``probe`` until ``accept`` holds; fail naming ``what`` and the last value after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {within}s")
        await asyncio.sleep(POLL_INTERVAL)


async def until(condition: Callable[[], object], *, what: str, within: float = 5, poll: float = 0) -> None:
    """Yield to this loop until ``condition()`` is truthy; fail naming ``what`` after ``within`` s.

    For state changed by callbacks and tasks in the test's own loop (a relay's feed, a
    stream's position): each pass lets every ready callback run once, so the wait ends in
    the loop turn the state changes, and a state that never comes fails the test in bounded
    time. ``poll`` > 0 when the state also waits on a thread (a database hop), so the wait
    does not hold the GIL that thread needs.
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {within}s")
        await asyncio.sleep(poll)


class Queue(Protocol):
    def queued(self) -> int: ...


async def all_queued(queue: Queue, count: int, *, within: float = 10) -> None:
    """Wait (at most ``within`` s) until ``count`` items are queued (a group commit held in a test)."""
    # The publishes reach the queue after their own thread hops (channel lookups).
    await until(lambda: queue.queued() >= count, what=f"{count} publishes queued", within=within, poll=0.001)
