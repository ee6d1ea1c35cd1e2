from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the census of server processes, metrics, health and the live operations page."""

    name = "events.ops"
    label = "ops"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events.ops import census, collectors, samples  # noqa: F401  (census and samples run on the tick)

        collectors.register()
