"""How a request arrived: is its Host one this server serves, and did it come over TLS.

The rules of ``HttpRequest.get_host()`` and ``HttpRequest.is_secure()``, for the
paths that answer from the ASGI scope without building a Django request (the SSE
consumer, the streaming publish, the API-key fast path, the security-header
layer). Every such path asks here, so each rule is written once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

from events.exceptions import InvalidInput

# HttpRequest.get_host(): with DEBUG and no ALLOWED_HOSTS, local names pass.
DEBUG_ALLOWED_HOSTS = (".localhost", "127.0.0.1", "[::1]")


def host_allowed(host: str) -> bool:
    """True if ``host`` (a Host header, port included) names a host in ALLOWED_HOSTS."""
    try:
        return _answers[host]
    except KeyError:
        pass
    allowed: Iterable[str] = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = DEBUG_ALLOWED_HOSTS
    domain, _port = split_domain_port(host)
    answer = bool(domain) and validate_host(domain, list(allowed))
    if len(host) <= MAX_REMEMBERED_LENGTH:
        if len(_answers) >= MAX_ANSWERS:
            _answers.clear()  # strangers' Host values cannot keep the usual ones out for good
        _answers[host] = answer
    return answer


# Why: every stream open asks, almost always with the same few Host values, and
# Django's parsing and matching were 8 % of the server's time while 5,000 streams
# opened; reading the two settings through Django's lazy settings object on every
# open was most of what was left (docs/performance.md, issue 16). Each Host's answer
# under the settings as they are; forgotten when ALLOWED_HOSTS or DEBUG change
# (override_settings and the ``settings`` fixture send setting_changed). Bounded in
# number (full: forgotten and filled again, so strangers' Host values cannot keep the
# usual ones out for good) and in size: uvicorn's httptools parser takes a header of
# any length, and a longer Host than a name and port can be is checked, not kept.
MAX_ANSWERS = 256
MAX_REMEMBERED_LENGTH = 300
_answers: dict[str, bool] = {}


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"ALLOWED_HOSTS", "DEBUG"}:
        _answers.clear()
    if setting in {"USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT"}:
        _forwarded.cache_clear()


def host_refused() -> InvalidInput:
    """The refusal of a Host this server does not serve: the same 400 on every path, Django's included."""
    return InvalidInput("The Host header names a host this server does not serve.")


def request_host(
    headers: dict[str, str], server: Sequence[Any] | None = None, scheme: str | None = None
) -> str:
    """The host a request names, as ``HttpRequest.get_host()`` reads it before checking it.

    ``X-Forwarded-Host`` when ``USE_X_FORWARDED_HOST`` is on and the request sent one
    (``DJANGO_USE_X_FORWARDED_HOST``: behind a proxy that sets it), else ``Host``, else
    (an HTTP/1.0 request without one) the server's own name and port from the scope's
    ``server``, as PEP 333 rebuilds it (``X-Forwarded-Port`` for the port when
    ``USE_X_FORWARDED_PORT`` is on). Every path that answers without Django asks here,
    so the stream, the streaming publish and the API-key fast path accept exactly the
    requests Django's views accept, and a stream's own origin is the one the browser
    sees (docs/security.md).
    """
    forwarded_host, forwarded_port = _forwarded()
    if forwarded_host and "x-forwarded-host" in headers:
        return headers["x-forwarded-host"]
    host = headers.get("host")
    if host is not None:
        return host
    name, port = (str(server[0]), str(server[1])) if server else ("unknown", "0")
    if forwarded_port and "x-forwarded-port" in headers:
        port = headers["x-forwarded-port"]
    if port != ("443" if is_secure(scheme, headers) else "80"):
        name = f"{name}:{port}"
    return name


def check_host(
    headers: dict[str, str], server: Sequence[Any] | None = None, scheme: str | None = None
) -> str:
    """The request's host (:func:`request_host`), if it names a host this server serves (these paths bypass Django's check)."""
    host = request_host(headers, server, scheme)
    if not host_allowed(host):
        raise host_refused()
    return host


@functools.cache
def _forwarded() -> tuple[bool, bool]:
    # Read once, not through the lazy settings object on every open; forgotten on setting_changed.
    return bool(settings.USE_X_FORWARDED_HOST), bool(settings.USE_X_FORWARDED_PORT)


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
