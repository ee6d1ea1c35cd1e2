"""``POST /api/channels/<slug>/messages`` with an API key, served straight from ASGI.

Server-to-server publishing (``Authorization: Bearer``, no cookie, no ``Origin``)
uses nothing from Django's middleware: no session, no CSRF check, no CORS. Yet
through Django's ASGI handler every such publish paid about 15 thread hops (each
sync middleware method and request signal) and some 2 ms of CPU
(docs/performance.md).

This endpoint stores with the same functions as the Django view (events/publish/api.py:
one database thread hop) and answers with the same status and body. It writes no
security header: pushsite/headers.py adds them to every response of the site.
``STANDS_IN_FOR`` says, for each entry of ``settings.MIDDLEWARE``, why skipping it
changes nothing for the requests taken here; while ``settings.MIDDLEWARE`` is any
other list, every request goes to Django (and tests/publish/test_fast_path.py fails).
Any request it cannot judge as cheaply (a cookie, an Origin, another method, a
host outside ALLOWED_HOSTS, plain HTTP that HTTPS settings would redirect, a
missing or too large Content-Length) goes to Django unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, HTTPScope
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse
from django.utils.cache import patch_vary_headers

from events.conf import conf
from events.deliver.direct import Headers, respond_direct
from events.http.asgi import RoutedHTTPScope, request_headers
from events.http.hosts import host_allowed, is_secure, request_host
from events.http.numbers import whole_number
from events.publish import api, idempotency

# Each middleware of settings.MIDDLEWARE, and what it would do to a request this
# endpoint answers: POST, ``Authorization: Bearer``, no Cookie, no Origin, a URL
# under CORS_URLS_REGEX, to the csrf_exempt view events.publish.api.channel_messages.
STANDS_IN_FOR: dict[str, str] = {
    "django.middleware.security.SecurityMiddleware": (
        "its headers come from pushsite/headers.py, which derives them from this middleware; "
        "plain HTTP that SECURE_SSL_REDIRECT would redirect is left to Django"
    ),
    "pushsite.middleware.AsyncWhiteNoiseMiddleware": "nothing: the URL is not a static file",
    "events.access.cors.ChannelOriginsMiddleware": "nothing: it looks only at requests with an Origin header",
    "corsheaders.middleware.CorsMiddleware": "without an Origin header, only 'Vary: origin' (added here)",
    "django.contrib.sessions.middleware.SessionMiddleware": "nothing: no cookie, and the session is never read",
    "django.middleware.common.CommonMiddleware": (
        "Content-Length (sent here); no slash to append to a POST; "
        "PREPEND_WWW and DISALLOWED_USER_AGENTS are left to Django when set"
    ),
    "django.middleware.csrf.CsrfViewMiddleware": "nothing: the view is csrf_exempt and no CSRF cookie is read or set",
    "django.contrib.auth.middleware.AuthenticationMiddleware": "nothing: the key path never reads request.user",
    "django.contrib.messages.middleware.MessageMiddleware": "nothing: no message is added or read",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": (
        "X-Frame-Options comes from pushsite/headers.py, which derives it from this middleware"
    ),
}


@functools.cache
def _enabled() -> bool:
    """True while settings allow the fast path to stand in for Django's middleware."""
    return (
        list(settings.MIDDLEWARE) == list(STANDS_IN_FOR)
        and not settings.PREPEND_WWW
        and not settings.DISALLOWED_USER_AGENTS
    )


@receiver(setting_changed)
def _settings_changed(**kwargs: Any) -> None:
    _enabled.cache_clear()


class KeyPublishEndpoint:
    """ASGI app for the publish URL: the API-key fast path, else ``fallback`` (Django)."""

    def __init__(
        self,
        fallback: ASGI3Application,
        *,
        missing_headers: Callable[[HTTPScope, Headers], Headers] | None = None,
    ) -> None:
        self.fallback = fallback
        # The security headers a head lacks (pushsite/headers.py ``missing_headers``):
        # the 201 is written whole, with them, below the layer that would add them.
        self.missing_headers = missing_headers

    async def __call__(
        self, scope: RoutedHTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        headers = _eligible_headers(scope)
        if headers is None:
            await self.fallback(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its body
        slug = scope["url_route"]["kwargs"]["slug"]
        store = functools.partial(
            api.publish_with_key, headers["authorization"], slug, body, headers.get(idempotency.ASGI_NAME)
        )
        outcome = await api.publish_stored(store, slug, scope["path"])
        if isinstance(outcome, HttpResponse):  # refused, replayed, or the database away
            await _send_response(send, outcome)
            return
        message, payload = outcome
        body = api.created_body(payload)
        # What Django's JsonResponse, its Location and CorsMiddleware's Vary make of
        # the 201, in their order, then the security headers the layer around would
        # add, without building the response object.
        head = [
            *_CREATED_HEAD,
            (b"Location", api.message_location(slug, message.sequence).encode("latin-1")),
            *_CREATED_VARY,
            (b"content-length", b"%d" % len(body)),
        ]
        if self.missing_headers is not None:
            head += self.missing_headers(scope, _CREATED_FIXED)
            if respond_direct(scope, 201, head, body):
                return  # manage.py serve: head and body in one write, below ASGI
        await send({"type": "http.response.start", "status": 201, "headers": head, "trailers": False})
        await send({"type": "http.response.body", "body": body, "more_body": False})


_CREATED_HEAD = ((b"Content-Type", b"application/json"),)
_CREATED_VARY = ((b"Vary", b"origin"),)
# The 201's headers that are the same on every one (Location and Content-Length vary).
_CREATED_FIXED: Headers = (*_CREATED_HEAD, *_CREATED_VARY)


async def _send_response(send: ASGISendCallable, response: HttpResponse) -> None:
    patch_vary_headers(response, ("origin",))  # as CorsMiddleware does under CORS_URLS_REGEX
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [
                *((name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()),
                (b"content-length", str(len(response.content)).encode()),
            ],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": response.content, "more_body": False})


def _eligible_headers(scope: HTTPScope) -> dict[str, str] | None:
    """The request's headers if the fast path may answer it, else None."""
    if scope["type"] != "http" or scope["method"] != "POST" or not _enabled():
        return None
    headers = request_headers(scope)
    if "cookie" in headers or "origin" in headers:
        return None  # sessions, CSRF and CORS stay with Django's middleware
    if not headers.get("authorization", "").lower().startswith("bearer "):
        return None
    declared = whole_number(headers.get("content-length", ""), max_digits=19)
    if declared is None or declared > conf.MAX_MESSAGE_BYTES:
        return None
    if not host_allowed(request_host(headers, scope.get("server"), scope.get("scheme"))):
        return None
    if settings.SECURE_SSL_REDIRECT and not is_secure(scope.get("scheme"), headers):
        return None
    return headers


async def _read_body(receive: ASGIReceiveCallable) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
