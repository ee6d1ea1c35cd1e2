from __future__ import annotations

from django.urls import path, re_path

from events.chat import views

urlpatterns = [
    path("rooms/", views.room_list, name="rooms"),
    path("rooms/<slug:slug>/", views.room_page, name="room"),
    path("rooms/<slug:slug>/messages", views.post_message, name="room-messages"),
    path("rooms/<slug:slug>/messages/<int:sequence>/delete", views.delete_message, name="room-delete"),
    path("rooms/<slug:slug>/guest", views.guest, name="room-guest"),
    path("rooms/<slug:slug>/typing", views.typing, name="room-typing"),
    path("rooms/<slug:slug>/mute", views.mute, name="room-mute"),
    path("rooms/<slug:slug>/presence", views.who_is_here, name="room-presence"),
    # The actions' paths with anything else where the slug goes: a JSON 404, not the HTML page.
    re_path(
        r"^rooms/(?P<rest>[^/]+/(?:messages|guest|typing|mute|presence|messages/[^/]+/delete))$",
        views.action_not_found,
        name="room-action-not-found",
    ),
]
