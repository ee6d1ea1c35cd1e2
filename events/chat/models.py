"""Chat rooms' own data: mutes and who is in which room."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from events.models import Channel


class ChatMute(models.Model):
    """A participant who may not post in a room, until a time or for good."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="mutes")
    # The author label a message carries as its publisher: "user:<name>" or "guest:<nick>".
    author = models.CharField(max_length=200)
    # Who is muted: "user:<pk>" or "guest:<session guest id>", so a new nickname
    # does not lift the mute (issue 13). Empty for mutes from before: label only.
    person = models.CharField(max_length=200, blank=True, default="", editable=False)
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: muted until unmuted.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        db_table = "events_chatmute"  # created by the core before chat was an app of its own
        indexes = [
            models.Index(fields=["channel", "author"], name="events_chat_channel_58884a_idx"),
            models.Index(fields=["channel", "person"], name="chat_mute_person_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.author} in {self.channel_id}"


class ChatNickname(models.Model):
    """A guest nickname used in a room, and the guest it stays with: nobody else may take it there."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="nicknames")
    name = models.CharField(max_length=150)
    # casefolded: "Bob" and "bob" are one name.
    name_key = models.CharField(max_length=150, editable=False)
    person = models.CharField(max_length=200)
    claimed_at = models.DateTimeField(auto_now_add=True)
    # Moved forward (at most hourly) when the guest posts under the name; a claim
    # idle for PUSHSITE_CHAT_NICKNAME_HOLD_DAYS that no kept message carries is
    # released (events/chat/nicknames.py), so the table does not grow for ever.
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "name_key"], name="chat_nickname_unique_in_room")
        ]

    def __str__(self) -> str:
        return f"{self.name} in {self.channel_id}"


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
