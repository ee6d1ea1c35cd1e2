"""The per-process tick: once a second, every periodic job in the process (``signals.tick``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from events.signals import tick

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class Every:
    """Due once per ``seconds`` of monotonic time: the pace of a job slower than the tick."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = float("-inf")

    def due(self, now: float, seconds: float | None = None) -> bool:
        if now - self._last < (self.seconds if seconds is None else seconds):
            return False
        self._last = now
        return True


async def send_tick(sender: Any, now: float) -> None:
    """Run every tick receiver once; a failing one is logged, the others are unaffected."""
    for receiver, result in await tick.asend_robust(sender=sender, now=now):
        if isinstance(result, Exception):
            logger.error(
                "Periodic job %s failed; it runs again on the next tick.",
                getattr(receiver, "__qualname__", receiver),
                exc_info=result,
            )


async def run(sender: Any) -> None:
    """Forever: one tick a second, for as long as the process's relay runs."""
    while True:
        await asyncio.sleep(TICK_SECONDS)
        await send_tick(sender, time.monotonic())
