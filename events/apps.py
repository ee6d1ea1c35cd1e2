from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Pushsite events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from . import checks, collectors, cors  # noqa: F401  (checks register on import)

        collectors.register()
        check_request_enabled.connect(cors.allow_channel_origins, dispatch_uid="pushsite-channel-origins")
