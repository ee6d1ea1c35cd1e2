"""The URLs served by ASGI applications rather than Django views.

The stream URLs are matched first, by :func:`stream_route` (a prefix test and one
regular expression, no router), and served by the stream endpoint
(events/deliver/endpoint.py) without Channels; pushsite/asgi.py composes them.
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


http_urlpatterns = [
    # Here, not in events/urls.py: Django's handler would read the whole body first.
    path("api/channels/<slug:slug>/stream", StreamPublishConsumer.as_asgi()),
]
