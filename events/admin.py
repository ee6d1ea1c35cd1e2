"""Django admin: channels, announcements, messages (read-only), API keys, live operations."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Max, QuerySet
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone

from . import announcements, census
from .admin_forms import PUBLISH_BUTTON, RETRACT_BUTTON, SCHEDULE_BUTTON, AnnouncementForm, ChannelForm
from .embedding import snippets_for
from .models import Announcement, AnnouncementState, ApiKey, Channel, ChatMute, Message
from .opscharts import operations_charts
from .publishing import publish

# The admin is one shared instance per model; per-request state goes here.
_live_for_this_request: ContextVar[dict[str, int]] = ContextVar("live_connections", default={})  # noqa: B039

# A process that has not reported for this long is gone (or stuck).
CENSUS_FRESHNESS = timedelta(seconds=15)


def live_connections() -> dict[str, int]:
    """Open connections per channel slug, added up over every live server process."""
    totals: dict[str, int] = {}
    for process in census.fresh_since(timezone.now() - CENSUS_FRESHNESS):
        for slug, count in process.channels.items():
            totals[slug] = totals.get(slug, 0) + int(count)
    return totals


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = [
        "slug",
        "title",
        "kind",
        "visibility",
        "is_active",
        "subscribers",
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

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._live = live_connections()  # one census read per page, not per row
        return super().changelist_view(request, extra_context)

    @admin.display(description="Live subscribers")
    def subscribers(self, channel: Channel) -> int:
        return getattr(self, "_live", {}).get(channel.slug, 0)

    @admin.display(description="Messages stored", ordering="stored_count")
    def stored(self, channel: Channel) -> int:
        return channel.stored_count  # type: ignore[attr-defined]

    @admin.display(description="Last message", ordering="last_message_at")
    def last_message(self, channel: Channel) -> Any:
        return channel.last_message_at  # type: ignore[attr-defined]

    @admin.action(description="Send a test message to the selected channels")
    def send_test_message(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for channel in queryset.filter(is_active=True):
            publish(
                channel,
                {"text": f"Test message from {request.user.get_username()}"},
                "test",
                publisher=f"user:{request.user.get_username()}",
            )
        self.message_user(
            request, f"Sent a test message to {queryset.filter(is_active=True).count()} channel(s)."
        )

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

    def get_urls(self) -> list[Any]:
        operations = self.admin_site.admin_view(self.operations_view)
        return [path("operations/", operations, name="events_operations"), *super().get_urls()]

    def operations_view(self, request: HttpRequest) -> HttpResponse:
        """What is live now: connections per channel and process, message rate, recent deliveries."""
        now = timezone.now()
        processes = census.fresh_since(now - CENSUS_FRESHNESS)
        per_minute = (
            Message.objects.filter(created_at__gte=now - timedelta(minutes=10))
            .annotate(minute=TruncMinute("created_at"))
            .values("minute")
            .annotate(count=Count("id"))
            .order_by("-minute")
        )
        per_channel = live_connections()
        context = {
            **self.admin_site.each_context(request),
            **operations_charts(now, per_channel),
            "title": "Live operations",
            "processes": processes,
            "channels": sorted(per_channel.items()),
            "total_connections": sum(p.connections for p in processes),
            "per_minute": list(per_minute),
            "recent": Message.objects.select_related("channel").order_by("-created_at")[:20],
            "refresh_seconds": 5,
        }
        return render(request, "admin/events/operations.html", context)


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin):
    form = AnnouncementForm
    list_display = ["title", "channel", "level", "state", "publish_at", "expires_at", "updated_at"]
    list_filter = ["state", "level", "channel"]
    search_fields = ["title", "body"]
    readonly_fields = ["state", "version", "created_by", "created_at", "updated_at"]
    actions = ["retract_selected"]
    change_form_template = "admin/events/announcement/change_form.html"

    def save_model(self, request: HttpRequest, obj: Announcement, form: Any, change: bool) -> None:
        by = f"user:{request.user.get_username()}"
        if not change:
            obj.created_by = request.user.get_username()
        if PUBLISH_BUTTON in request.POST:
            announcements.publish_now(obj, by)
            self.message_user(request, f"Published “{obj.title}”: open pages show it now.")
        elif SCHEDULE_BUTTON in request.POST:
            assert obj.publish_at is not None  # the form requires it for this button
            announcements.schedule(obj, obj.publish_at)
            self.message_user(request, f"Scheduled “{obj.title}” for {obj.publish_at:%Y-%m-%d %H:%M} UTC.")
        elif RETRACT_BUTTON in request.POST:
            announcements.retract(obj, by)
            self.message_user(request, f"Retracted “{obj.title}”: open pages remove it now.")
        else:
            announcements.save_edit(obj, by)

    def response_change(self, request: HttpRequest, obj: Announcement) -> HttpResponse:
        if any(button in request.POST for button in (PUBLISH_BUTTON, SCHEDULE_BUTTON, RETRACT_BUTTON)):
            return HttpResponseRedirect(reverse("admin:events_announcement_change", args=[obj.pk]))
        return super().response_change(request, obj)

    def response_add(
        self, request: HttpRequest, obj: Announcement, post_url_continue: str | None = None
    ) -> HttpResponse:
        if any(button in request.POST for button in (PUBLISH_BUTTON, SCHEDULE_BUTTON)):
            return HttpResponseRedirect(reverse("admin:events_announcement_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Retract the selected announcements")
    def retract_selected(self, request: HttpRequest, queryset: QuerySet[Announcement]) -> None:
        by = f"user:{request.user.get_username()}"
        count = 0
        for announcement in queryset.exclude(state=AnnouncementState.RETRACTED).select_related("channel"):
            announcements.retract(announcement, by)
            count += 1
        self.message_user(request, f"Retracted {count} announcement(s).")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
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

    @admin.action(description="Revoke the selected keys (takes effect at once)")
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
