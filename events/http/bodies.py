"""Request bodies read whole (Django's views, the API-key fast path) or skipped (the stream URLs): bounded in size and in time.

Django's ASGI handler reads a request's whole body, spooled to a temporary file, before
any view or middleware sees the request: a chunked body (no Content-Length to refuse it
by) was read to its end whatever its size, and a body that stopped arriving held its
connection for good. This layer sits in front of them and answers, in the contract's
JSON shape, as the streaming publish does for its own body:

- 413 once more than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes arrived (Django's own limit
  for a request body it reads into memory; views set smaller ones of their own);
- 408 when no byte arrived for ``PUSHSITE_STREAM_IDLE_SECONDS``;
- 400 when its ``Content-Length`` is not one whole number (Django's ``request.body``
  calls ``int()`` on it: "²", or two values joined by a comma, was a 500; uvicorn's
  parser refuses those itself, other servers may not).

Once the body is complete, ``receive`` is handed on untouched (Django listens on it for
a disconnect while a response streams).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from django.conf import settings

from events.conf import conf
from events.exceptions import InvalidInput, PayloadTooLarge, PushsiteError, RequestTimeout
from events.http.numbers import whole_number
from events.http.responses import AsgiSend, send_error


async def receive_body_part(receive: Callable[[], Awaitable[Any]], received: int) -> tuple[Any, int]:
    """The next message of a request body, and the body's bytes so far: the one bound on every body read whole.

    Raises RequestTimeout (408) when no message came for ``PUSHSITE_STREAM_IDLE_SECONDS``,
    PayloadTooLarge (413) once more than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes arrived.
    """
    idle = conf.STREAM_IDLE_SECONDS
    # The server's receive() answers without waiting when the body has arrived (a
    # small publish: uvicorn has it before the app runs); only a wait is timed.
    waiting = receive().__await__()
    try:
        pending = waiting.send(None)
    except StopIteration as done:
        message = done.value
    else:
        try:
            async with asyncio.timeout(idle):
                message = await _resume(waiting, pending)
        except TimeoutError:
            raise RequestTimeout(f"No data arrived for {idle:g} s; the request is closed.") from None
    if message["type"] == "http.request":
        received += len(message.get("body", b""))
        limit: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and received > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    return message, received


@types.coroutine
def _resume(waiting: Generator[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``waiting``, which yielded ``pending`` (what it waits on) to its first send.

    What ``await`` would do from there: hands each yielded future to the task, sends its
    result back in, throws in what is thrown at the task (the timeout's cancellation).
    """
    while True:
        try:
            sent = yield pending
        except BaseException as error:  # handed on to the awaitable, as await does
            try:
                pending = waiting.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = waiting.send(sent)
            except StopIteration as done:
                return done.value


class BoundedBody:
    """ASGI middleware: an ``http`` request's body past the size limit is 413, one that stalls 408."""

    # Any ASGI app (Django's handler, events/publish/fast_path.py's endpoint): their
    # scope types differ (asgiref's TypedDicts, Channels' routed scope).
    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: AsgiSend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        malformed = _malformed_content_length(scope["headers"])
        if malformed is not None:
            await send_error(
                send, InvalidInput(f"Content-Length must be one whole number of bytes, not {malformed!r}.")
            )
            return
        received = 0
        complete = False
        refused = False

        async def refuse(error: PushsiteError) -> dict[str, Any]:
            nonlocal refused
            refused = True
            await send_error(send, error)
            return {"type": "http.disconnect"}  # the app stops reading and answers nothing

        async def bounded_receive() -> Any:
            nonlocal received, complete
            if complete:
                return await receive()
            if refused:
                return {"type": "http.disconnect"}
            try:
                message, received = await receive_body_part(receive, received)
            except (RequestTimeout, PayloadTooLarge) as error:
                return await refuse(error)
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Any) -> None:
            if not refused:  # answered here already
                await send(message)

        await self.app(scope, bounded_receive, guarded_send)


def _malformed_content_length(headers: Any) -> str | None:
    """The request's Content-Length value(s) when they are not one whole number; None when fine or absent."""
    values = [value for name, value in headers if name.lower() == b"content-length"]
    if not values:
        return None
    text = b",".join(values).decode("latin-1")
    if len(values) == 1 and whole_number(text, max_digits=19) is not None:
        return None
    return text[:40]
