"""The announcements admin: publish now, schedule, retract; every visible change is a message."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from events.access import ratelimit
from events.announcements import workflow as announcements
from events.announcements.forms import PUBLISH_BUTTON, RETRACT_BUTTON, SCHEDULE_BUTTON, AnnouncementForm
from events.announcements.models import Announcement, AnnouncementState
from events.exceptions import RateLimited


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin[Announcement]):
    form = AnnouncementForm
    list_display = ["title", "channel", "level", "state", "publish_at", "expires_at", "updated_at"]
    list_filter = ["state", "level", "channel"]
    search_fields = ["title", "body"]
    readonly_fields = ["state", "version", "created_by", "created_at", "updated_at"]
    actions = ["retract_selected"]
    change_form_template = "admin/announcements/announcement/change_form.html"

    def get_form(
        self, request: HttpRequest, obj: Announcement | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Announcement]]:
        form = super().get_form(request, obj, change, **kwargs)
        # A new class per call (modelform_factory), so this is this request's alone.
        form.editor_pk = request.user.pk  # type: ignore[attr-defined]  # AnnouncementForm.editor_pk
        return form

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
            return HttpResponseRedirect(reverse("admin:announcements_announcement_change", args=[obj.pk]))
        return super().response_change(request, obj)

    def response_add(
        self, request: HttpRequest, obj: Announcement, post_url_continue: str | None = None
    ) -> HttpResponse:
        if any(button in request.POST for button in (PUBLISH_BUTTON, SCHEDULE_BUTTON)):
            return HttpResponseRedirect(reverse("admin:announcements_announcement_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    # permissions: an action without them runs for anyone who may view the list.
    @admin.action(description="Retract the selected announcements", permissions=["change"])
    def retract_selected(self, request: HttpRequest, queryset: QuerySet[Announcement]) -> None:
        by = f"user:{request.user.get_username()}"
        count = 0
        pending = queryset.exclude(state=AnnouncementState.RETRACTED)
        # Nothing can be published to a switched-off channel: those are left as they are.
        for announcement in pending.filter(channel__is_active=True).select_related("channel"):
            try:
                ratelimit.count_staff_publish(request.user.pk)
            except RateLimited as refusal:
                self.message_user(request, f"Stopped: {refusal.detail}", level=messages.ERROR)
                break
            announcements.retract(announcement, by)
            count += 1
        self.message_user(request, f"Retracted {count} announcement(s).")
        skipped = pending.filter(channel__is_active=False).count()
        if skipped:
            self.message_user(
                request,
                f"{skipped} announcement(s) left as they are: their channel is switched off.",
                level=messages.WARNING,
            )
