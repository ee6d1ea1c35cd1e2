"""ASGI types: asgiref's, plus the route that Channels' ``URLRouter`` adds to a scope."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from asgiref.typing import HTTPScope


class URLRoute(TypedDict):
    """``scope["url_route"]``: the matched path's positional and keyword arguments."""

    args: tuple[str, ...]
    kwargs: dict[str, str]


class RoutedHTTPScope(HTTPScope):
    """An HTTP scope as a Channels ``URLRouter`` hands it on."""

    url_route: NotRequired[URLRoute]


def request_headers(scope: HTTPScope) -> dict[str, str]:
    """A request's headers by lower-case name, a repeated one joined as Django's ASGI handler joins it.

    Every endpoint that reads headers from the scope (the stream, the streaming publish,
    the API-key fast path) reads them here, so a header sent twice means the same on
    those doors as in Django's views: ``Authorization`` twice is one value that is no
    key (401), never the last of the two (tests/access/test_repeated_headers.py).
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            if name == "cookie":
                value = headers[name].rstrip("; ") + "; " + value.rstrip("; ")
            else:
                value = headers[name] + "," + value
        headers[name] = value
    return headers
