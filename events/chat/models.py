"""Chat rooms' own data: mutes and who is in which room."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from events.models import Channel


class ChatMute(models.Model):
    """A participant who may not post in a room, until a time or for good."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="mutes")
    # The author label a message carries as its publisher: "user:<name>" or "guest:<nick>".
    author = models.CharField(max_length=200)
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: muted until unmuted.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        db_table = "events_chatmute"  # created by the core before chat was an app of its own
        indexes = [models.Index(fields=["channel", "author"], name="events_chat_channel_58884a_idx")]

    def __str__(self) -> str:
        return f"{self.author} in {self.channel_id}"


class ChatPresence(models.Model):
    """One open chat stream: who is in which room, on which server process."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="presence")
    connection = models.CharField(max_length=64, unique=True)
    author = models.CharField(max_length=200)
    name = models.CharField(max_length=150)
    guest = models.BooleanField(default=False)
    process = models.CharField(max_length=200)
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "events_chatpresence"
        indexes = [models.Index(fields=["channel", "last_seen"], name="events_chat_channel_afabec_idx")]

    def __str__(self) -> str:
        return f"{self.author} in {self.channel_id}"
