"""The core's URLs (pushsite/urls.py adds each feature's under the same "events" namespace)."""

from __future__ import annotations

from django.urls import path, re_path

from events import views
from events.publish import api

urlpatterns = [
    path("", views.home, name="home"),
    path("channels/<slug:slug>/", views.channel_page, name="channel"),
    path("api/channels/<slug:slug>/messages", api.channel_messages, name="api-messages"),
    path("api/tokens", api.tokens, name="api-tokens"),
    path("api/openapi.json", views.api_description, name="api-description"),
    # Anything else under /api/ is a JSON 404, even with DEBUG on (no feature has /api/ URLs).
    # ([\s\S], not ".": a %0A in the path is a newline, which "." would not match.)
    re_path(r"^api/(?P<rest>[\s\S]*)$", views.api_not_found, name="api-not-found"),
    # The streams are ASGI routes (events/routing.py): what reaches Django under /events is
    # no stream, and gets a JSON 404 that names the right URL (a missing slash, usually).
    re_path(r"^events(?:/(?P<rest>[\s\S]*))?$", views.stream_not_found, name="stream-not-found"),
]
