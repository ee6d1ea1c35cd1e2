"""Operations in the admin: live subscribers per channel and the live operations page.

The core registers the channel admin; this app re-registers it with a column
and a page of its own (the usual way for one app to extend another's admin).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from events.admin import ChannelAdmin
from events.models import Channel, Message
from events.ops import census
from events.ops.charts import operations_charts

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


class OperationsChannelAdmin(ChannelAdmin):
    """The core's channel admin, plus live subscribers and the live operations page."""

    list_display = [*ChannelAdmin.list_display[:5], "subscribers", *ChannelAdmin.list_display[5:]]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._live = live_connections()  # one census read per page, not per row
        return super().changelist_view(request, extra_context)

    @admin.display(description="Live subscribers")
    def subscribers(self, channel: Channel) -> int:
        live: dict[str, int] = getattr(self, "_live", {})
        return live.get(channel.slug, 0)

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
        return render(request, "admin/ops/operations.html", context)


admin.site.unregister(Channel)
admin.site.register(Channel, OperationsChannelAdmin)
