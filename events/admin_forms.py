"""Admin forms whose errors explain themselves."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from events.models import Announcement, Channel, validate_origin, validate_web_link


class ChannelForm(forms.ModelForm):
    """Allowed origins as one origin per line, each checked with a sentence that says what is wrong."""

    allowed_origins = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="One origin per line, scheme and host only: https://partner.example or http://localhost:8080.",
    )

    class Meta:
        model = Channel
        fields = [
            "slug",
            "title",
            "description",
            "is_active",
            "visibility",
            "members",
            "allowed_origins",
            "retention_count",
            "retention_age",
            "stream_storage",
            "kind",
            "guests_may_post",
            "chat_max_length",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["allowed_origins"] = "\n".join(self.instance.allowed_origins)

    def clean_allowed_origins(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["allowed_origins"].splitlines() if line.strip()]
        errors = []
        for number, origin in enumerate(lines, start=1):
            try:
                validate_origin(origin)
            except ValidationError as exc:
                errors.append(ValidationError(f"Line {number}: {exc.messages[0]}"))
        if errors:
            raise ValidationError(errors)
        return list(dict.fromkeys(lines))


PUBLISH_BUTTON = "_publish_now"
SCHEDULE_BUTTON = "_schedule"
RETRACT_BUTTON = "_retract"


class AnnouncementForm(forms.ModelForm):
    """Checks the dates against each other and against now."""

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
        return cleaned

    def clean_for_schedule(self) -> None:
        """Extra rule when the "Schedule" button was pressed."""
        publish_at = self.cleaned_data.get("publish_at")
        if publish_at is None:
            self.add_error("publish_at", "Choose when to publish it, or use Publish now.")
        elif publish_at <= timezone.now():
            self.add_error("publish_at", "This time is in the past: use Publish now, or pick a later time.")
