from __future__ import annotations

from django.apps import AppConfig


class AnnouncementsConfig(AppConfig):
    """Announcements: notices staff publish to every open page."""

    name = "events.announcements"
    label = "announcements"
    verbose_name = "Announcements"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events.announcements import scheduler  # noqa: F401  (connects its signal receivers)
