from __future__ import annotations

from django.apps import AppConfig


class WidgetsConfig(AppConfig):
    """Live widgets embedded on other sites: the iframe page and the snippets shown in the admin."""

    name = "events.widgets"
    label = "widgets"
    verbose_name = "Live widgets"

    def ready(self) -> None:
        from events.widgets import embedding  # noqa: F401  (connects its signal receivers)
