"""WhiteNoise that Django can call without leaving the event loop.

WhiteNoise 6 is a sync-only middleware. One sync middleware in the stack makes
Django's ASGI handler run the rest of the request through a worker thread and
back (SyncToAsync around it, AsyncToSync inside it), and on a fresh thread per
request, so every publish also opened a new database connection. Serving a
static file is the only part that touches the disk; it still runs in a thread.
docs/performance.md has the before / after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import FileResponse, HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):  # type: ignore[misc]  # whitenoise ships no type hints
    """``whitenoise.middleware.WhiteNoiseMiddleware``, async-only."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        assert iscoroutinefunction(get_response), "Django passes async handlers to async-only middleware."
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # DEBUG: looks at the disk on every request
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            served: HttpResponseBase = await sync_to_async(self.serve, thread_sensitive=False)(
                static_file, request
            )
            if isinstance(served, FileResponse):
                # Its file as an async iterator: Django's ASGI handler reads a sync one
                # whole into memory first, with a warning on every server's first file.
                # (The response still closes the file when it is done.)
                served.streaming_content = read_in_threads(served.file_to_stream)
            return served
        response: HttpResponseBase = await self.get_response(request)
        return response


# Bytes read per thread hop while a static file is sent.
STATIC_CHUNK_BYTES = 64 * 1024


async def read_in_threads(file: IO[bytes] | None) -> AsyncIterator[bytes]:
    """``file``'s bytes, each chunk read in a worker thread (none for a 304 or a HEAD)."""
    if file is None:
        return
    read = sync_to_async(file.read, thread_sensitive=False)
    while chunk := await read(STATIC_CHUNK_BYTES):
        yield chunk
