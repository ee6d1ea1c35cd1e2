"""Admin forms whose errors explain themselves."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from events.models import Channel, validate_origin


class ChannelForm(forms.ModelForm[Channel]):
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
