"""What each server process reports about itself, for the operations views."""

from __future__ import annotations

from django.db import models


class ServerCensus(models.Model):
    """What one server process reports about itself every few seconds (live operations view)."""

    process = models.CharField(max_length=200, unique=True, help_text="host:pid")
    connections = models.PositiveIntegerField(default=0)
    channels = models.JSONField(default=dict, help_text="Open connections per channel slug.")
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "events_servercensus"  # created by the core before operations were an app
        verbose_name = "server process"
        ordering = ["process"]

    def __str__(self) -> str:
        return self.process
