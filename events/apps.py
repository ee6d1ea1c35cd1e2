from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    """The core: publish -> store -> relay -> stream, access rules and the wire formats."""

    name = "events"
    verbose_name = "Pushsite events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from events import checks  # noqa: F401  (the checks register on import)
        from events.access import cors, stream_slots  # noqa: F401  (stream_slots renews leases on the tick)
        from events.deliver import access_sweep, heartbeat, relay  # noqa: F401  (tick receivers)
        from events.publish import idempotency  # noqa: F401  (prunes receipts on the tick)

        check_request_enabled.connect(cors.allow_channel_origins, dispatch_uid="pushsite-channel-origins")
