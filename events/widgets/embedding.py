"""The copy-paste snippets that embed a channel's live widget on another site."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from django.dispatch import receiver
from django.http import HttpRequest
from django.templatetags.static import static
from django.urls import reverse

from events.models import Channel, Visibility
from events.signals import channel_admin_context


@dataclass(frozen=True)
class Snippets:
    script: str
    iframe: str
    origins: list[str]
    private: bool


def snippets_for(channel: Channel, base_url: str) -> Snippets:
    """The ``<script>`` and ``<iframe>`` tags for ``channel``, served from ``base_url``."""
    # Plain strings (not SafeString): the admin template escapes them for
    # display, so the snippet is shown as code and never runs in the admin.
    title = escape(channel.display_title, quote=True)
    slug = escape(channel.slug, quote=True)
    script = (
        f'<script src="{base_url}{static("events/widget.js")}" data-channel="{slug}" '
        f'data-title="{title}" data-theme="light" async></script>'
    )
    iframe = (
        f'<iframe src="{base_url}{reverse("events:embed", args=[channel.slug])}" title="{title}" '
        'width="420" height="320" style="border:0"></iframe>'
    )
    return Snippets(
        script=script,
        iframe=iframe,
        origins=list(channel.allowed_origins),
        private=channel.visibility != Visibility.PUBLIC,
    )


@receiver(channel_admin_context, dispatch_uid="pushsite-widget-snippets")
def snippets_in_admin(sender: Any, channel: Channel, request: HttpRequest, **kwargs: Any) -> dict[str, Any]:
    """The channel's admin page shows the snippets that embed it."""
    return {"embed": snippets_for(channel, request.build_absolute_uri("/").rstrip("/"))}
