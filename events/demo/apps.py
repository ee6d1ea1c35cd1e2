from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo: seeded channels, the score ticker and the streamed-answer page."""

    name = "events.demo"
    label = "demo"
    verbose_name = "Pushsite demo"
