"""``POST /api/channels/<slug>/messages`` with an API key, served straight from ASGI.

Server-to-server publishing (``Authorization: Bearer``, no cookie, no ``Origin``)
uses nothing from Django's middleware: no session, no CSRF check, no CORS. Yet
through Django's ASGI handler every such publish paid about 15 thread hops (each
sync middleware method and request signal) and some 3 ms of CPU, about a third
of the server's work per message at 1000 subscribers (docs/performance.md).

This endpoint stores with the same functions as the Django view (events/publish/api.py:
one database thread hop), answers with the same status and body, and adds the
headers the middleware would have added. Any request it cannot judge as cheaply
(a cookie, an Origin, another method, a host outside ALLOWED_HOSTS, plain HTTP
that HTTPS settings would redirect, a missing or too large Content-Length) goes
to Django unchanged.
"""

from __future__ import annotations

import functools

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, HTTPScope
from django.conf import settings
from django.http import HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.utils.cache import patch_vary_headers

from events.conf import conf
from events.http.asgi import RoutedHTTPScope
from events.publish import api
from pushsite.security import ContentSecurityPolicyMiddleware


class KeyPublishEndpoint:
    """ASGI app for the publish URL: the API-key fast path, else ``fallback`` (Django)."""

    def __init__(self, fallback: ASGI3Application) -> None:
        self.fallback = fallback

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
        store = functools.partial(api.store_with_key, headers["authorization"], slug, body)
        response = await api.publish_response(store, slug, scope["path"])
        _add_middleware_headers(response, _is_secure(scope, headers))
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
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    if "cookie" in headers or "origin" in headers:
        return None  # sessions, CSRF and CORS stay with Django's middleware
    if not headers.get("authorization", "").lower().startswith("bearer "):
        return None
    declared = headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > conf.MAX_MESSAGE_BYTES:
        return None
    if not _host_allowed(headers.get("host", "")):
        return None
    if settings.SECURE_SSL_REDIRECT and not _is_secure(scope, headers):
        return None
    return headers


def _host_allowed(host: str) -> bool:
    # As HttpRequest.get_host(): with DEBUG and no ALLOWED_HOSTS, local names pass.
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _is_secure(scope: HTTPScope, headers: dict[str, str]) -> bool:
    # As HttpRequest.is_secure() with SECURE_PROXY_SSL_HEADER.
    proxy_header: tuple[str, str] | None = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        value = headers.get(name.removeprefix("HTTP_").replace("_", "-").lower())
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return bool(scope.get("scheme") == "https")


async def _read_body(receive: ASGIReceiveCallable) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _add_middleware_headers(response: HttpResponseBase, secure: bool) -> None:
    """What settings.MIDDLEWARE adds to an API response without cookies or Origin."""
    # django.middleware.security.SecurityMiddleware
    if secure and settings.SECURE_HSTS_SECONDS and not response.has_header("Strict-Transport-Security"):
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        response["Strict-Transport-Security"] = hsts
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        value = policy if isinstance(policy, str) else ",".join(policy)
        response.headers.setdefault("Referrer-Policy", value)
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        response.headers.setdefault("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY)
    # django.middleware.clickjacking.XFrameOptionsMiddleware
    response.headers.setdefault("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper())
    # corsheaders.middleware.CorsMiddleware (the API matches CORS_URLS_REGEX)
    patch_vary_headers(response, ("origin",))
    # pushsite.security.ContentSecurityPolicyMiddleware
    ContentSecurityPolicyMiddleware.apply(response)
