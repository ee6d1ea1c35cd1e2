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
