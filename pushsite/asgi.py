"""ASGI entry point: ``pushsite.asgi:application``.

The stream URLs go to the stream endpoint, matched first by a path test
(events/routing.py ``stream_route``) with no Channels router or consumer on the
way (issue 16: opens per second); its response heads carry the security
headers, built once per shape (``complete_head``). The JSON publish URL is matched
the same way (``publish_route``, issue 17) and goes to the same layers Channels'
router led it to. Everything else goes through
one layer that sets the security headers on every response (pushsite/headers.py),
then Channels' routes and Django. On SIGTERM every open stream ends cleanly so
that clients resume elsewhere (events/runtime/shutdown.py).
"""

from __future__ import annotations

import os

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")

# Set up Django (apps, settings) before importing anything that uses models.
# django-stubs types ASGIHandler with plain-dict scopes and messages, asgiref.typing with
# TypedDicts: the same ASGI 3 protocol.
django_application: ASGI3Application = get_asgi_application()  # type: ignore[assignment]

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from events.deliver.endpoint import EventStreamEndpoint  # noqa: E402
from events.http.bodies import BoundedBody  # noqa: E402
from events.http.responses import refuse_websocket  # noqa: E402
from events.publish.fast_path import KeyPublishEndpoint  # noqa: E402
from events.routing import http_urlpatterns, publish_route, stream_route  # noqa: E402
from events.runtime.lifespan import lifespan  # noqa: E402
from pushsite.headers import SecurityHeadersMiddleware, complete_head, missing_headers  # noqa: E402

# Bodies read whole are bounded in size and time first (events/http/bodies.py).
bounded_publish = BoundedBody(KeyPublishEndpoint(django_application, missing_headers=missing_headers))
bounded_django = BoundedBody(django_application)

routes: ASGI3Application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                *http_urlpatterns,
                # Publishing with an API key skips Django's middleware; every
                # other request to this URL falls through to the Django view.
                # (Channels' URLRouter routes ASGI apps; django-stubs' path() knows only views.)
                path("api/channels/<slug:slug>/messages", bounded_publish),  # type: ignore[arg-type]
                re_path(r"", bounded_django),  # type: ignore[arg-type]
            ]
        ),
        "lifespan": lifespan,
    }
)

site: ASGI3Application = SecurityHeadersMiddleware(routes)
streams = EventStreamEndpoint(complete_head=complete_head)
# The publish URL, routed here rather than by Channels' routers (issue 17): the
# same layers as through ``site`` (security headers, bounded body, the fast path
# or Django behind it).
publishes: ASGI3Application = SecurityHeadersMiddleware(bounded_publish)  # type: ignore[arg-type]


async def application(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Streams straight to their endpoint; every other request to the site."""
    if scope["type"] == "http":
        route = stream_route(scope["path"])
        if route is not None:
            # A copy, as a router hands on a scope; the server's own scope stays as it was.
            await streams({**scope, "url_route": route}, receive, send)  # type: ignore[arg-type]
            return
        # Channels' router strips a root_path first: such a scope still goes through it.
        route = None if scope.get("root_path") else publish_route(scope["path"])
        if route is not None:
            await publishes({**scope, "url_route": route}, receive, send)  # type: ignore[arg-type]
            return
    elif scope["type"] == "websocket":
        # No route takes one: Channels' router raised, a 500 and a traceback per request.
        await refuse_websocket(receive, send)  # type: ignore[arg-type]
        return
    await site(scope, receive, send)
