"""The announcement form: its errors say what to fix for the button that was pressed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone

from events.access import ratelimit
from events.announcements.models import Announcement, AnnouncementState
from events.exceptions import RateLimited
from events.models import validate_web_link

PUBLISH_BUTTON = "_publish_now"
SCHEDULE_BUTTON = "_schedule"
RETRACT_BUTTON = "_retract"


class AnnouncementForm(forms.ModelForm[Announcement]):
    """Checks the dates against each other and against now, and the editor's publish rate."""

    # Who presses the button (set by AnnouncementAdmin.get_form on the form class it
    # builds for that request): a form that publishes counts against their rate.
    editor_pk: object = None

    link = forms.URLField(
        required=False,
        assume_scheme="https",
        validators=[validate_web_link],
        help_text="Optional, http(s) only.",
    )

    class Meta:
        model = Announcement
        fields = ["channel", "title", "body", "level", "link", "publish_at", "expires_at"]
        widgets = {"body": forms.Textarea(attrs={"rows": 4, "maxlength": 2000})}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        now = timezone.now()
        expires_at = cleaned.get("expires_at")
        publish_at = cleaned.get("publish_at")
        if expires_at is not None and expires_at <= now:
            self.add_error(
                "expires_at", "This expiry is in the past: pages would hide the announcement at once."
            )
        elif expires_at is not None and publish_at is not None and expires_at <= publish_at:
            self.add_error("expires_at", "The expiry must come after the publication time.")
        if SCHEDULE_BUTTON in self.data:
            self.clean_for_schedule()
        channel = cleaned.get("channel")
        if channel is not None and not channel.is_active and self.sends_now():
            self.add_error(
                "channel",
                "This channel is switched off: nothing can be published to it. "
                "Switch it on first, or save without publishing.",
            )
        if not self.errors and self.sends_now() and self.editor_pk is not None:
            try:
                ratelimit.count_staff_publish(self.editor_pk)
            except RateLimited as refusal:
                self.add_error(None, f"Nothing was published: {refusal.detail}")
        return cleaned

    def sends_now(self) -> bool:
        """Whether the button pressed publishes a message now (events/announcements/workflow.py)."""
        if PUBLISH_BUTTON in self.data:
            return True
        if SCHEDULE_BUTTON in self.data:
            return False  # a due one waits for its channel (workflow.publish_due)
        return self.instance.state == AnnouncementState.PUBLISHED  # retract, or edit in place

    def clean_for_schedule(self) -> None:
        """Extra rule when the "Schedule" button was pressed."""
        publish_at = self.cleaned_data.get("publish_at")
        if publish_at is None:
            self.add_error("publish_at", "Choose when to publish it, or use Publish now.")
        elif publish_at <= timezone.now():
            self.add_error("publish_at", "This time is in the past: use Publish now, or pick a later time.")
