from __future__ import annotations

from django.urls import path

from . import api, views

app_name = "events"

urlpatterns = [
    path("", views.home, name="home"),
    path("channels/<slug:slug>/", views.channel_page, name="channel"),
    path("demo/streamed/", views.streamed_demo, name="streamed-demo"),
    path("demo/streamed/ask", views.streamed_demo_ask, name="streamed-demo-ask"),
    path("api/channels/<slug:slug>/messages", api.channel_messages, name="api-messages"),
    path("api/tokens", api.tokens, name="api-tokens"),
    path("embed/<slug:slug>/", views.embed, name="embed"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
]
