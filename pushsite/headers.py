"""Security headers on every HTTP response, streams included: one ASGI layer around the site.

SSE streams, the streaming publish and the API-key publish fast path answer from
ASGI without Django's middleware; Django's pages and views go through it. This
layer wraps the whole application (pushsite/asgi.py), so every response gets the
same headers whichever road it took, and no endpoint writes them by hand.

The headers are not a copy of Django's rules: they are what Django's own
``SecurityMiddleware`` and ``XFrameOptionsMiddleware`` add to a blank response
under the current settings (computed once, again after ``override_settings``),
plus the site's Content-Security-Policy (pushsite/security.py). A response keeps
every header it already has; one that sets its own Content-Security-Policy has
decided its framing with ``frame-ancestors`` (the iframe embed does) and gets no
``X-Frame-Options``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Iterable
from typing import Any

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from events.http.hosts import is_secure
from pushsite.security import CONTENT_SECURITY_POLICY

Headers = tuple[tuple[bytes, bytes], ...]

X_FRAME_OPTIONS = b"x-frame-options"
CONTENT_SECURITY_POLICY_HEADER = b"content-security-policy"


class _Probe(HttpRequest):
    """A request that is secure or not, and nothing else: what the header middlewares ask."""

    def __init__(self, secure: bool) -> None:
        super().__init__()
        self._secure = secure

    def is_secure(self) -> bool:
        return self._secure


def _unused(request: HttpRequest) -> HttpResponse:
    raise AssertionError("Only process_response is called on the probe.")


@functools.cache
def security_headers(secure: bool) -> Headers:
    """The headers Django's header middlewares add to a response, plus the CSP."""
    blank = HttpResponse()
    response = HttpResponse()
    probe = _Probe(secure)
    SecurityMiddleware(_unused).process_response(probe, response)
    XFrameOptionsMiddleware(_unused).process_response(probe, response)
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return tuple(
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
        if name not in blank
    )


@functools.cache
def _secure_differs() -> bool:
    """True when a secure request gets other headers (HSTS configured); asked once, not per response."""
    return security_headers(False) != security_headers(True)


@receiver(setting_changed)
def _settings_changed(**kwargs: Any) -> None:
    security_headers.cache_clear()
    _secure_differs.cache_clear()
    _completed.cache_clear()
    _missing_once.cache_clear()


def wanted_headers(scope: HTTPScope) -> Headers:
    """The security headers for a response to this request (HSTS only on a secure one, when configured)."""
    wanted = security_headers(False)
    if _secure_differs():  # HSTS is configured: only on secure requests
        request_headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        wanted = security_headers(is_secure(scope.get("scheme"), request_headers))
    return wanted


def _missing(headers: Iterable[tuple[bytes, bytes]], wanted: Headers) -> Headers:
    """The security headers a response lacks; none of the framing ones when it sets its own CSP."""
    present = {name.lower() for name, _value in headers}
    own_framing = CONTENT_SECURITY_POLICY_HEADER in present
    return tuple(
        (name, value)
        for name, value in wanted
        if name.lower() not in present and not (own_framing and name.lower() == X_FRAME_OPTIONS)
    )


@functools.lru_cache(maxsize=512)
def _completed(headers: Headers, wanted: Headers) -> Headers:
    return headers + _missing(headers, wanted)


@functools.lru_cache(maxsize=64)
def _missing_once(headers: Headers, wanted: Headers) -> Headers:
    return _missing(headers, wanted)


def missing_headers(scope: HTTPScope, headers: Headers) -> Headers:
    """The security headers a response with ``headers`` lacks, once per distinct ``headers``.

    For an endpoint that writes its head itself around headers that vary per response
    (the JSON publish's 201 and its ``Location``, events/publish/fast_path.py): it passes
    the fixed ones (no security header among the varying ones) and appends the result,
    as this layer would.
    """
    return _missing_once(headers, wanted_headers(scope))


def complete_head(scope: HTTPScope, headers: Headers) -> Headers:
    """``headers`` plus each security header they lack: built once per distinct head, then reused.

    For an endpoint that answers outside this layer (the stream endpoint,
    pushsite/asgi.py): the same rule as the middleware, without its per-request
    ``send`` wrapper or a new header list per response.
    """
    return _completed(headers, wanted_headers(scope))


def add_security_headers(message: Any, scope: HTTPScope) -> Any:
    """``message`` (an ``http.response.start``) with each security header it lacks."""
    missing = _missing(message.get("headers", ()), wanted_headers(scope))
    if not missing:
        return message
    return {**message, "headers": [*message.get("headers", ()), *missing]}


class SecurityHeadersMiddleware:
    """ASGI middleware: every ``http`` response gets the security headers it lacks."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # A plain function, not a coroutine: a stream calls this for every frame
        # it writes, and this way a frame costs one call, not one more coroutine
        # (streams start each send eagerly: events/deliver/eager.py).
        def send_with_headers(message: ASGISendEvent) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message = add_security_headers(message, scope)
            return send(message)

        await self.app(scope, receive, send_with_headers)
