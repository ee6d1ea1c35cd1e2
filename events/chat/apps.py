from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Chat rooms: people posting to a channel from its room page."""

    name = "events.chat"
    label = "chat"
    verbose_name = "Chat rooms"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events.chat import nicknames, presence  # noqa: F401  (connects their signal receivers)
        from events.chat.rules import EVENT_PREFIX
        from events.publish.validate import reserve_event_prefix

        # A key must not forge an author's chat.message or a moderator's chat.deleted.
        reserve_event_prefix(EVENT_PREFIX, "a chat room's own endpoints (POST /rooms/<slug>/messages)")
