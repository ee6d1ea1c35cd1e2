"""The threads that store publishes: each keeps its database connection while publishes keep coming (issue 17).

Channels' ``database_sync_to_async`` closes the thread's connection before and after
every call (``CONN_MAX_AGE=0``): for every publish a SQLite connection was opened
(schema read, WAL index mapped: 12 % of the server's samples under load) or a pooled
PostgreSQL connection checked out and checked with a round trip of its own. Here a
thread keeps its connection for its next publish when that comes within
``HOLD_SECONDS``; an older one is closed (given back to the pool) first, so a
connection that sat idle is checked again before use; a kept PostgreSQL connection
whose backend was killed meanwhile is noticed without a round trip and replaced;
one that saw an error is never kept.

:class:`GroupCommit` is the thread that stores the publishes themselves (issue 17):
what is queued when it is free goes in one transaction (events/publish/store.py
``store_batch``), and every publisher in it is answered after that commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

logger = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")

# Each may hold one pooled connection (DATABASE_POOL_SIZE is 10 by default).
PUBLISH_THREADS = 4
# A kept connection idle longer than this is closed before the thread's next publish.
HOLD_SECONDS = 1.0

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_local = threading.local()


def executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="pushsite-publish")
        return _executor


def holding_connection(func: Callable[[], T]) -> T:
    """``func()`` on this thread's kept connection (closed first if it sat idle, dropped after an error)."""
    last_used: float | None = getattr(_local, "last_used", None)
    if last_used is None or time.monotonic() - last_used > HOLD_SECONDS:
        connections.close_all()
    else:
        for connection in connections.all(initialized_only=True):
            # PostgreSQL (pushsite/postgresql/): a backend killed since the last
            # publish is dropped here, so the publish checks out a live one.
            discard = getattr(connection, "discard_if_closed_by_server", None)
            if discard is not None:
                discard()
    try:
        return func()
    finally:
        _local.last_used = time.monotonic()
        for connection in connections.all(initialized_only=True):
            if connection.errors_occurred or connection.in_atomic_block:
                connection.close()


async def run(func: Callable[[], T]) -> T:
    """Run ``func`` (a store) in a publish thread, on that thread's kept connection."""
    runner = sync_to_async(holding_connection, thread_sensitive=False, executor=executor())
    result: T = await runner(func)
    return result


# --- group commit (issue 17) ----------------------------------------------------------

# Most publishes stored in one transaction.
MAX_BATCH = 64


# A queued unit: its items, the loop of its publisher and the future answered there.
_Entry = tuple[list[Item], asyncio.AbstractEventLoop, asyncio.Future[list[T | Exception]]]


class GroupCommit(Generic[Item, T]):
    """One thread storing what is queued together: ``store(batch)`` in one transaction, then every answer.

    A publisher queues its item and waits. The thread takes everything queued
    when it is free (at most ``max_batch``), so a lone publisher is stored at
    once and never waits for a window; while one batch commits, the next
    gathers. ``store`` returns one outcome per item, in order: a value, or an
    exception for that item alone; when ``store`` raises (the transaction or
    its commit failed), every item of the batch gets that exception, so no
    publisher hears "stored" unless the batch's commit returned.

    A unit (:meth:`submit_unit`, the parts of one streamed publish) is several
    items queued at once: they go into one batch together, side by side and in
    order, never split between two transactions.
    """

    def __init__(
        self, store: Callable[[list[Item]], Sequence[T | Exception]], max_batch: int = MAX_BATCH
    ) -> None:
        self._store = store
        self.max_batch = max_batch
        self._queue: deque[_Entry[Item, T]] = deque()
        self._ready = threading.Condition()
        # Held by the thread while it takes and stores a batch.
        self._turn = threading.Lock()
        self._thread: threading.Thread | None = None

    async def submit(self, item: Item) -> T:
        """Queue ``item``; its outcome once its batch has committed (or its exception)."""
        outcome = (await self.submit_unit([item]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit_unit(self, items: list[Item]) -> asyncio.Future[list[T | Exception]]:
        """Queue ``items`` as one unit (at most ``max_batch``): stored in one batch, in order.

        The future (of the running loop) gets one outcome per item once that batch
        has committed, or the batch's exception when its transaction or commit failed.
        """
        if not 0 < len(items) <= self.max_batch:
            raise ValueError(f"A unit holds 1 to {self.max_batch} items, not {len(items)}.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[T | Exception]] = loop.create_future()
        with self._ready:
            self._queue.append((items, loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pushsite-group-commit", daemon=True)
                self._thread.start()
            self._ready.notify()
        return future

    @contextmanager
    def held(self) -> Iterator[None]:
        """While held, nothing is stored; what is queued meanwhile is stored together (tests)."""
        with self._turn:
            yield

    def queued(self) -> int:
        """The items queued (a unit counts each of its items)."""
        with self._ready:
            return sum(len(items) for items, _, _ in self._queue)

    def _run(self) -> None:
        while True:
            with self._ready:
                busy = self._ready.wait_for(lambda: self._queue, timeout=HOLD_SECONDS)
            if not busy:
                connections.close_all()  # idle: the connection goes back (to the pool)
                with self._ready:
                    self._ready.wait_for(lambda: self._queue)
            with self._turn:
                with self._ready:
                    batch = [self._queue.popleft()]
                    size = len(batch[0][0])
                    while self._queue and size + len(self._queue[0][0]) <= self.max_batch:
                        size += len(self._queue[0][0])
                        batch.append(self._queue.popleft())
                self._write(batch)

    def _write(self, batch: list[_Entry[Item, T]]) -> None:
        items = [item for unit, _, _ in batch for item in unit]
        outcomes: Sequence[T | Exception]
        try:
            outcomes = holding_connection(lambda: self._store(items))
            if len(outcomes) != len(items):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(items)}.")
        except Exception as error:
            # The transaction or its commit failed: nobody in the batch is told "stored".
            logger.warning("A batch of %s publishes failed: %s", len(items), error)
            outcomes = [error] * len(items)
            failed: Exception | None = error
        else:
            failed = None
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        start = 0
        for unit, loop, future in batch:
            answer = failed if failed is not None else list(outcomes[start : start + len(unit)])
            start += len(unit)
            answers.setdefault(loop, []).append((future, answer))
        for loop, answered in answers.items():
            with suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_answer, answered)


def _answer(answered: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in answered:
        if future.done():
            continue  # its publisher left (cancelled); the outcome stands all the same
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
