"""Django admin: channels, their messages (read-only), and API keys."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from .embedding import snippets_for
from .models import ApiKey, Channel, ChatMute, Message


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "kind", "visibility", "is_active", "last_sequence", "updated_at"]
    list_filter = ["kind", "visibility", "is_active"]
    search_fields = ["slug", "title", "description"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["last_sequence", "created_at", "updated_at"]
    filter_horizontal = ["members"]
    fieldsets = [
        (None, {"fields": ["slug", "title", "description", "kind", "is_active"]}),
        ("Chat room", {"fields": ["guests_may_post", "chat_max_length"]}),
        ("Access", {"fields": ["visibility", "members", "allowed_origins"]}),
        ("History", {"fields": ["retention_count", "retention_age", "last_sequence"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"]}),
    ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        channel = self.get_object(request, object_id)
        if channel is not None:
            context["embed"] = snippets_for(channel, request.build_absolute_uri("/").rstrip("/"))
        return super().change_view(request, object_id, form_url, context)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["channel", "sequence", "event", "publisher", "created_at"]
    list_filter = ["channel", "event"]
    search_fields = ["event", "publisher"]
    list_select_related = ["channel"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages are published through the API, never typed in

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "is_active", "created_at", "last_used_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "prefix"]
    filter_horizontal = ["channels"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            fresh, secret = ApiKey.generate(obj.name)
            obj.prefix, obj.secret_hash = fresh.prefix, fresh.secret_hash
            super().save_model(request, obj, form, change)
            self.message_user(
                request,
                f"The key's secret, shown only this once: {secret}",
                level=messages.WARNING,
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.update(is_active=False)
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(ChatMute)
class ChatMuteAdmin(admin.ModelAdmin):
    """Muted participants; delete a row to unmute."""

    list_display = ["author", "channel", "until", "by", "created_at"]
    list_filter = ["channel"]
    search_fields = ["author"]
    list_select_related = ["channel", "by"]
