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
