from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from events.chat.models import ChatMute, ChatNickname


@admin.register(ChatMute)
class ChatMuteAdmin(admin.ModelAdmin[ChatMute]):
    """Muted participants; delete a row to unmute."""

    list_display = ["author", "person", "channel", "until", "by", "created_at"]
    list_filter = ["channel"]
    search_fields = ["author", "person"]
    list_select_related = ["channel", "by"]


@admin.register(ChatNickname)
class ChatNicknameAdmin(admin.ModelAdmin[ChatNickname]):
    """Guest nicknames held per room; delete a row to free the name."""

    list_display = ["name", "channel", "person", "claimed_at"]
    list_filter = ["channel"]
    search_fields = ["name", "person"]
    list_select_related = ["channel"]
    readonly_fields = ["name", "channel", "person", "claimed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a guest takes a name by using it
