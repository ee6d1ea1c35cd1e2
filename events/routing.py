"""The URLs served by ASGI applications rather than Django views.

The stream URLs are matched first, by :func:`stream_route` (a prefix test and one
regular expression, no router), and served by the stream endpoint
(events/deliver/endpoint.py) without Channels; the JSON publish URL likewise, by
:func:`publish_route`, goes to the API-key fast path (events/publish/fast_path.py)
without Channels' routers; pushsite/asgi.py composes them.
"""

from __future__ import annotations

import re

from django.urls import path

from events.http.asgi import URLRoute
from events.publish.ingest import StreamPublishConsumer

STREAM_PREFIX = "/events/"
# Django's ``<slug:...>`` converter, as the stream's URL pattern had it.
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")


def stream_route(path: str) -> URLRoute | None:
    """``/events/`` and ``/events/<slug>/`` as a route (the slug in its kwargs); None for any other path.

    Every request asks, so it is cheap: a prefix test, then a match on what follows.
    """
    if not path.startswith(STREAM_PREFIX):
        return None
    rest = path[len(STREAM_PREFIX) :]
    if not rest:
        return {"args": (), "kwargs": {}}
    if rest[-1] != "/" or not _SLUG.fullmatch(rest, 0, len(rest) - 1):
        return None
    return {"args": (), "kwargs": {"slug": rest[:-1]}}


PUBLISH_PREFIX = "/api/channels/"
PUBLISH_SUFFIX = "/messages"


def publish_route(path: str) -> URLRoute | None:
    """``/api/channels/<slug>/messages`` as a route (the slug in its kwargs); None for any other path.

    What Channels' ``URLRouter`` matched for ``path("api/channels/<slug:slug>/messages")``,
    as a prefix and suffix test and one regular expression (issue 17). A path it does
    not take (another URL, a doubled leading slash) still goes through the router.
    """
    if not path.startswith(PUBLISH_PREFIX) or not path.endswith(PUBLISH_SUFFIX):
        return None
    slug = path[len(PUBLISH_PREFIX) : -len(PUBLISH_SUFFIX)]
    if not _SLUG.fullmatch(slug):
        return None
    return {"args": (), "kwargs": {"slug": slug}}


http_urlpatterns = [
    # Here, not in events/urls.py: Django's handler would read the whole body first.
    path("api/channels/<slug:slug>/stream", StreamPublishConsumer.as_asgi()),
]
