from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Pushsite events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, collectors  # noqa: F401  (checks register on import)

        collectors.register()
