"""Announcements: notices staff publish to a channel."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from events.models import Channel, validate_web_link


class AnnouncementLevel(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AnnouncementState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    PUBLISHED = "published", "Published"
    RETRACTED = "retracted", "Retracted"


class Announcement(models.Model):
    """A notice staff publish to a channel; every change is a message, so clients converge."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="announcements")
    title = models.CharField(max_length=200)
    body = models.TextField(max_length=2000)
    level = models.CharField(max_length=16, choices=AnnouncementLevel.choices, default=AnnouncementLevel.INFO)
    link = models.URLField(blank=True, validators=[validate_web_link], help_text="Optional, http(s) only.")
    publish_at = models.DateTimeField(
        null=True, blank=True, help_text="When a scheduled announcement goes out (your time zone: UTC)."
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When pages hide it; empty: never.")
    state = models.CharField(
        max_length=16, choices=AnnouncementState.choices, default=AnnouncementState.DRAFT, editable=False
    )
    # Bumped on every change that reaches clients: a dismissal is per version,
    # so an edited announcement shows again.
    version = models.PositiveIntegerField(default=0, editable=False)
    expiry_sent = models.BooleanField(default=False, editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-publish_at", "-created_at"]
        db_table = "events_announcement"  # created by the core before announcements were an app
        indexes = [
            models.Index(fields=["state", "publish_at"], name="events_anno_state_3ddb91_idx"),
            models.Index(fields=["state", "expires_at"], name="events_anno_state_3d14ce_idx"),
        ]

    def __str__(self) -> str:
        return self.title

    def is_live(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.state == AnnouncementState.PUBLISHED and (
            self.expires_at is None or self.expires_at > now
        )
