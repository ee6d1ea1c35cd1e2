"""Django admin for the core: channels, messages (read-only) and API keys."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Max, QuerySet
from django.http import HttpRequest, HttpResponse

from events.access import ratelimit
from events.admin_forms import ChannelForm
from events.exceptions import RateLimited
from events.models import ApiKey, Channel, Message
from events.publish.store import publish
from events.signals import channel_admin_context


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin[Channel]):
    form = ChannelForm
    list_display = [
        "slug",
        "title",
        "kind",
        "visibility",
        "is_active",
        "stored",
        "last_message",
    ]
    list_filter = ["kind", "visibility", "is_active", "stream_storage"]
    search_fields = ["slug", "title", "description"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["last_sequence", "created_at", "updated_at"]
    filter_horizontal = ["members"]
    actions = ["send_test_message"]
    fieldsets = [
        (None, {"fields": ["slug", "title", "description", "kind", "is_active"]}),
        ("Chat room", {"fields": ["guests_may_post", "chat_max_length"]}),
        ("Access", {"fields": ["visibility", "members", "allowed_origins"]}),
        ("History", {"fields": ["retention_count", "retention_age", "stream_storage", "last_sequence"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Channel]:
        return (
            super()
            .get_queryset(request)
            .annotate(stored_count=Count("messages"), last_message_at=Max("messages__created_at"))
        )

    @admin.display(description="Messages stored", ordering="stored_count")
    def stored(self, channel: Channel) -> int:
        count: int = channel.stored_count  # type: ignore[attr-defined]  # get_queryset's annotate() adds it
        return count

    @admin.display(description="Last message", ordering="last_message_at")
    def last_message(self, channel: Channel) -> Any:
        return channel.last_message_at  # type: ignore[attr-defined]  # get_queryset's annotate() adds it

    @admin.action(description="Send a test message to the selected channels")
    def send_test_message(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        sent = 0
        for channel in queryset.filter(is_active=True):
            try:
                ratelimit.count_staff_publish(request.user.pk)
            except RateLimited as refusal:
                self.message_user(request, f"Stopped: {refusal.detail}", level=messages.ERROR)
                break
            publish(
                channel,
                {"text": f"Test message from {request.user.get_username()}"},
                "test",
                publisher=f"user:{request.user.get_username()}",
            )
            sent += 1
        self.message_user(request, f"Sent a test message to {sent} channel(s).")

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
            for _receiver, extra in channel_admin_context.send(
                sender=Channel, channel=channel, request=request
            ):
                # django-stubs types signal responses as str | None; these receivers return dicts.
                context.update(extra or {})  # type: ignore[arg-type]
        return super().change_view(request, object_id, form_url, context)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = [
        "channel",
        "sequence",
        "event",
        "publisher",
        "created_at",
        "delivered_live",
        "delivered_replay",
    ]
    list_filter = ["channel", "event"]
    search_fields = ["event", "publisher"]
    list_select_related = ["channel"]
    date_hierarchy = "created_at"
    readonly_fields = ["delivered_live", "delivered_replay"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages are published through the API, never typed in

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ["name", "prefix", "all_channels", "scope", "is_active", "created_at", "last_used_at"]
    list_filter = ["is_active", "all_channels"]
    search_fields = ["name", "prefix"]
    filter_horizontal = ["channels"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    @admin.display(description="Channels")
    def scope(self, key: ApiKey) -> str:
        if key.all_channels:
            return "all channels"
        return ", ".join(channel.slug for channel in key.channels.all()) or "none"

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

    # permissions: an action without them runs for anyone who may view the list.
    @admin.action(description="Revoke the selected keys (takes effect at once)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.update(is_active=False)
        self.message_user(request, f"Revoked {count} key(s).")
