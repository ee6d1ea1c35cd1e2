"""Background tasks that must not inherit the context of the request that started them."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def detached(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Start ``coro`` as a task in a fresh, empty context.

    Django's ASGI handler runs each request in a thread-sensitive executor that
    quits when the request ends; a task created inside the request (say the
    relay, first started by /healthz) would inherit it, and every later
    ``database_sync_to_async`` call from that task would fail with
    "CurrentThreadExecutor already quit or is broken".
    """
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
