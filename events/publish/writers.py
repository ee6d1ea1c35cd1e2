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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

T = TypeVar("T")

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


def _holding_connection(func: Callable[[], T]) -> T:
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
    runner = sync_to_async(_holding_connection, thread_sensitive=False, executor=executor())
    result: T = await runner(func)
    return result
