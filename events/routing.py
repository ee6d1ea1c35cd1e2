"""ASGI routes served by Channels consumers rather than Django views."""

from __future__ import annotations

from django.urls import path

from .consumers import EventStreamConsumer

stream = EventStreamConsumer.as_asgi()

http_urlpatterns = [
    path("events/", stream),
    path("events/<slug:slug>/", stream),
]
