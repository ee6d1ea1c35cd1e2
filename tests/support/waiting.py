"""Bounded waiting for conditions that have no event to await (state in another process)."""

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


class Queue(Protocol):
    def queued(self) -> int: ...


async def all_queued(queue: Queue, count: int, *, within: float = 10) -> None:
    """Wait (at most ``within`` s) until ``count`` items are queued (a group commit held in a test)."""
    async with asyncio.timeout(within):
        while queue.queued() < count:
            await asyncio.sleep(0.005)
