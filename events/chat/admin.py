from __future__ import annotations

from django.contrib import admin

from events.chat.models import ChatMute


@admin.register(ChatMute)
class ChatMuteAdmin(admin.ModelAdmin[ChatMute]):
    """Muted participants; delete a row to unmute."""

    list_display = ["author", "channel", "until", "by", "created_at"]
    list_filter = ["channel"]
    search_fields = ["author"]
    list_select_related = ["channel", "by"]
