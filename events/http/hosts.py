"""How a request arrived: is its Host one this server serves, and did it come over TLS.

The rules of ``HttpRequest.get_host()`` and ``HttpRequest.is_secure()``, for the
paths that answer from the ASGI scope without building a Django request (the SSE
consumer, the streaming publish, the API-key fast path, the security-header
layer). Every such path asks here, so each rule is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from events.exceptions import InvalidInput

# HttpRequest.get_host(): with DEBUG and no ALLOWED_HOSTS, local names pass.
DEBUG_ALLOWED_HOSTS = (".localhost", "127.0.0.1", "[::1]")


def host_allowed(host: str) -> bool:
    """True if ``host`` (a Host header, port included) names a host in ALLOWED_HOSTS."""
    allowed: Iterable[str] = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = DEBUG_ALLOWED_HOSTS
    return _host_allowed(host, tuple(allowed))


# Why: every stream open asks, almost always with the same few Host values, and
# Django's parsing and matching were 8 % of the server's time while 5,000 streams
# opened (docs/performance.md, issue 16). Keyed on the settings too, so a changed
# ALLOWED_HOSTS (override_settings) is never answered from the cache.
@lru_cache(maxsize=256)
def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, list(allowed))


def host_refused() -> InvalidInput:
    """The refusal of a Host this server does not serve: the same 400 on every path, Django's included."""
    return InvalidInput("The Host header names a host this server does not serve.")


def check_host(headers: dict[str, str]) -> str:
    """The Host header, if it names a host this server serves (these paths bypass Django's check)."""
    host = headers.get("host", "")
    if not host_allowed(host):
        raise host_refused()
    return host


def is_secure(scheme: str | None, headers: dict[str, str]) -> bool:
    """``HttpRequest.is_secure()``: SECURE_PROXY_SSL_HEADER when the proxy sent it, else the scheme.

    ``headers`` has lower-case names, as ``request_headers`` returns them.
    """
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        meta_name, secure_value = proxy_header
        value = headers.get(meta_name.removeprefix("HTTP_").replace("_", "-").lower())
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return scheme == "https"
