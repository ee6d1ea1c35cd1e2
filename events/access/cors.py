"""Cross-origin reads of the JSON history, allowed per channel (django-cors-headers).

django-cors-headers asks this handler, through its ``check_request_enabled``
signal, whether a request's origin may read the response. The SSE stream does
not pass through Django's middleware and applies the same rule itself
(events/deliver/consumer.py ``check_origin``).

The middleware stack is async (pushsite/middleware.py), so django-cors-headers
sends its signal on the event loop, where the database may not be used (it was
a 500 for every history request with an ``Origin``). :class:`ChannelOriginsMiddleware`,
just outside it, reads the channel's allowed origins in a worker thread first
and leaves them on the request for the handler.
"""

from __future__ import annotations

import re
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from events.models import Channel

# Matched whole (fullmatch): "$" also matches before a trailing newline, so a
# path ending in %0A was judged as the history (a preflight approved, a 404 with CORS headers).
HISTORY_PATH = re.compile(r"/api/channels/(?P<slug>[-a-zA-Z0-9_]{1,50})/messages")
READ_METHODS = {"GET", "HEAD"}


def allow_channel_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """True when the request reads the history of a channel that allows its Origin (exact match)."""
    match = HISTORY_PATH.fullmatch(request.path)
    if match is None:
        return False
    method = request.method
    if method == "OPTIONS":
        method = request.headers.get("Access-Control-Request-Method", "")
    if method not in READ_METHODS:
        return False  # publishing from another site's page would expose an API key
    origin = request.headers.get("Origin")
    if not origin:
        return False
    if hasattr(request, ORIGINS_ATTRIBUTE):
        allowed = getattr(request, ORIGINS_ATTRIBUTE)
    else:  # a sync stack (WSGI): no middleware looked them up, and the database may be used here
        allowed = channel_origins(match["slug"])
    return allowed is not None and origin in allowed


ORIGINS_ATTRIBUTE = "pushsite_channel_origins"


def channel_origins(slug: str) -> list[str] | None:
    """The origins the active channel ``slug`` allows; None when there is no such channel."""
    allowed: list[str] | None = (
        Channel.objects.active().filter(slug=slug).values_list("allowed_origins", flat=True).first()
    )
    return allowed


class ChannelOriginsMiddleware:
    """For a cross-origin history read, the channel's allowed origins, read off the event loop.

    Placed right before ``corsheaders.middleware.CorsMiddleware``; does nothing
    for any other request (no ``Origin``, or another URL).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        # Sync stack: the handler may query itself.
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        match = HISTORY_PATH.fullmatch(request.path)
        if match is not None and request.headers.get("Origin"):
            allowed = await sync_to_async(channel_origins)(match["slug"])
            setattr(request, ORIGINS_ATTRIBUTE, allowed)
        response: HttpResponseBase = await self.get_response(request)
        return response
