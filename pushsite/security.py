"""Security headers Django does not set by itself: a Content-Security-Policy on every page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

# No inline script anywhere (every script is a file in /static/); inline styles
# are allowed because the widget styles its Shadow DOM with a <style> element
# and styles cannot run code. Pages are framable by nobody; the iframe embed
# view sets its own frame-ancestors from the channel's allowed origins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that does not set its own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        return self.apply(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self.apply(await self.get_response(request))

    @staticmethod
    def apply(response: HttpResponseBase) -> HttpResponseBase:
        """Set the policy unless the response has its own (also used by the API fast path)."""
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response
