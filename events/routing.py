"""ASGI routes served by Channels consumers rather than Django views."""

from __future__ import annotations

from django.urls import path

from events.deliver.consumer import EventStreamConsumer
from events.publish.ingest import StreamPublishConsumer

stream = EventStreamConsumer.as_asgi()

http_urlpatterns = [
    path("events/", stream),
    path("events/<slug:slug>/", stream),
    # Here, not in events/urls.py: Django's handler would read the whole body first.
    path("api/channels/<slug:slug>/stream", StreamPublishConsumer.as_asgi()),
]
