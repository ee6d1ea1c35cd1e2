from __future__ import annotations

from django.contrib import admin

from events.chat.models import ChatMute


@admin.register(ChatMute)
class ChatMuteAdmin(admin.ModelAdmin):
    """Muted participants; delete a row to unmute."""

    list_display = ["author", "person", "channel", "until", "by", "created_at"]
    list_filter = ["channel"]
    search_fields = ["author", "person"]
    list_select_related = ["channel", "by"]
