"""Many callers, one thread hop: database work asked for while a batch is read joins the next one.

Opening a stream after a restart costs a database admission and a history read;
with every client back at once (a reconnect storm) that was one thread hop and one
query each, queued one after another on the single database thread
(docs/performance.md, issue 16). A :class:`Batcher` gathers the calls made within
one loop turn, and those made while its previous batch is in the database thread,
and runs them as one call of a synchronous function in one hop: no window to wait
out when the process is idle, larger batches exactly when the database thread is
the queue. At most ``max_size`` items go into one hop (the rest wait for the next),
so one batch's memory and query size stay bounded.

The function answers each item on its own (a result or an exception), so one
refused or failing item never decides another's answer; an exception from the
function itself (the database is down) is every item's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

from events.runtime.tasks import detached

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Calls ``run(items)`` in the database thread for the items awaited meanwhile; one batch at a time."""

    __slots__ = ("_loop", "_pending", "_run", "_worker", "max_size")

    def __init__(self, run: Callable[[list[Item]], Sequence[Result | Exception]], *, max_size: int) -> None:
        self._run = database_sync_to_async(run)
        self.max_size = max_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        """``item``'s answer from the next batch (raises the exception it was answered with)."""
        return await self.submit(item)

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """The future of ``item``'s answer from the next batch; cancel it to leave the batch."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Another event loop (tests): what the old one held is gone with it.
            self._loop, self._pending, self._worker = loop, [], None
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._worker is None:
            # Starts on the next loop turn: every call of this turn is in its first batch.
            # Detached: a request's thread-sensitive context must not serve other requests.
            self._worker = detached(self._drain())
        return future

    async def _drain(self) -> None:
        waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                batch = self._pending[: self.max_size]
                del self._pending[: self.max_size]
                waiting = [(item, future) for item, future in batch if not future.done()]
                if not waiting:
                    continue  # every caller left (cancelled) before its turn
                try:
                    results = await self._run([item for item, _ in waiting])
                except Exception as exc:
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(waiting, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            for _, future in waiting + self._pending:
                future.cancel()
            self._pending = []
            raise
        finally:
            self._worker = None
