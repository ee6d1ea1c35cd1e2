"""Start a coroutine synchronously and only pay for a Task when it has to wait.

An ASGI server's ``send`` almost always finishes without suspending: it writes
to the socket's buffer and returns; it only waits when the client's buffer is
full. Running each send eagerly saves a Task per delivery, which is most of the
cost of fan-out (docs/performance.md). Python 3.12's eager task factory does
the same; Pushsite targets 3.11, which lacks it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` up to its first suspension.

    Returns None when it already finished, or a Task that runs the rest. An
    exception raised before the first suspension propagates to the caller.
    """
    try:
        suspended_on = coro.send(None)
    except StopIteration:
        return None
    task = asyncio.ensure_future(_finish(coro, suspended_on))
    # A Task cancelled before its first step never runs _finish, so nothing
    # would reach coro: close it, so its cleanup (finally blocks) runs now.
    task.add_done_callback(lambda _: coro.close())
    return task


async def _finish(coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    await _Resumed(coro, suspended_on)


class _Resumed:
    """Awaitable that hands ``coro``'s pending future to the running Task and drives the rest."""

    __slots__ = ("_coro", "_suspended_on")

    def __init__(self, coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
        self._coro = coro
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, suspended_on = self._coro, self._suspended_on
        while True:
            try:
                value = yield suspended_on
            except BaseException as exc:  # cancellation and errors go to coro
                try:
                    suspended_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    suspended_on = coro.send(value)
                except StopIteration:
                    return
