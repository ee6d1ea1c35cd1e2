"""ASGI entry point: ``pushsite.asgi:application``.

SSE streams go to the Channels consumer; everything else to Django. One layer
around it all sets the security headers on every response (pushsite/headers.py).
On SIGTERM every open stream ends cleanly so that clients resume elsewhere
(events/runtime/shutdown.py).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")

# Set up Django (apps, settings) before importing anything that uses models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from events.publish.fast_path import KeyPublishEndpoint  # noqa: E402
from events.routing import http_urlpatterns  # noqa: E402
from events.runtime.lifespan import lifespan  # noqa: E402
from pushsite.headers import SecurityHeadersMiddleware  # noqa: E402

routes = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                *http_urlpatterns,
                # Publishing with an API key skips Django's middleware; every
                # other request to this URL falls through to the Django view.
                path("api/channels/<slug:slug>/messages", KeyPublishEndpoint(django_application)),
                re_path(r"", django_application),
            ]
        ),
        "lifespan": lifespan,
    }
)

application: Any = SecurityHeadersMiddleware(routes)
