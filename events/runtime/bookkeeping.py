"""Bookkeeping off the data path: periodic jobs that touch the database or the layer (issue 15).

Stream admission and gap filling use Channels' ``database_sync_to_async``: one
thread per process, shared by every stream. A slow write there (the census once
wrote a row per delivered message) delayed every stream open and gap fill. So
the tick's jobs run their blocking work in threads of their own
(:func:`off_path`), each with its own database connection, and as a
:class:`Job`: the tick starts it and returns at once (heartbeats never wait on
bookkeeping), and a job whose last run has not finished skips its turn instead
of queueing behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

from events.runtime.tasks import detached

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Two, so one stuck job (a lock, a sick database) does not hold up the others;
# each holds a pooled connection only while it runs.
BOOKKEEPING_THREADS = 2

_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(BOOKKEEPING_THREADS, thread_name_prefix="pushsite-bookkeeping")
    return _executor


def _with_own_connection(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        # Pooled: back to the pool; SQLite or unpooled: closed. Never held between runs.
        connections.close_all()


async def off_path(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``func`` in a bookkeeping thread, never the data path's database thread."""
    runner = sync_to_async(_with_own_connection, thread_sensitive=False, executor=executor())
    result: T = await runner(func, *args, **kwargs)
    return result


class Job:
    """A periodic job: one run at a time, started without waiting; a busy turn is skipped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running: asyncio.Task[None] | None = None
        self.skipped = 0

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``work()`` unless the last run is still going (then skip: False)."""
        if self.busy:
            self.skipped += 1
            logger.info("%s: the last run has not finished; skipping this turn.", self.name)
            return False
        self.running = detached(self._run(work))
        return True

    async def _run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed; it runs again on its next turn.", self.name)

    async def wait(self) -> None:
        """Until the current run, if any, has finished (tests, shutdown)."""
        if self.running is not None:
            await asyncio.shield(self.running)
