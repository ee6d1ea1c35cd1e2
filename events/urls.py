from __future__ import annotations

from django.urls import path, re_path

from . import api, rooms, views

app_name = "events"

urlpatterns = [
    path("", views.home, name="home"),
    path("channels/<slug:slug>/", views.channel_page, name="channel"),
    path("demo/streamed/", views.streamed_demo, name="streamed-demo"),
    path("demo/streamed/ask", views.streamed_demo_ask, name="streamed-demo-ask"),
    path("api/channels/<slug:slug>/messages", api.channel_messages, name="api-messages"),
    path("api/tokens", api.tokens, name="api-tokens"),
    path("embed/<slug:slug>/", views.embed, name="embed"),
    path("rooms/", rooms.room_list, name="rooms"),
    path("rooms/<slug:slug>/", rooms.room_page, name="room"),
    path("rooms/<slug:slug>/messages", rooms.post_message, name="room-messages"),
    path("rooms/<slug:slug>/messages/<int:sequence>/delete", rooms.delete_message, name="room-delete"),
    path("rooms/<slug:slug>/guest", rooms.guest, name="room-guest"),
    path("rooms/<slug:slug>/typing", rooms.typing, name="room-typing"),
    path("rooms/<slug:slug>/mute", rooms.mute, name="room-mute"),
    path("rooms/<slug:slug>/presence", rooms.who_is_here, name="room-presence"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    # Last: anything else under /api/ is a JSON 404, even with DEBUG on.
    re_path(r"^api/(?P<rest>.*)$", views.api_not_found, name="api-not-found"),
]
