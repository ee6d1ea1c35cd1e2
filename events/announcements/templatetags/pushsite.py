"""``{% live_announcements "site-news" %}``: a banner of live announcements for any template."""

from __future__ import annotations

from typing import Any

from django import template

from events.announcements.workflow import live_on, payload
from events.models import Channel

register = template.Library()


@register.inclusion_tag("events/announcements.html")
def live_announcements(slug: str) -> dict[str, Any]:
    """Render the announcements live now, and subscribe for every later change.

    The page starts from the channel's current position, so nothing published
    between rendering and subscribing is missed.
    """
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        return {"channel": None, "slug": slug}
    live = [payload(announcement, "published") for announcement in live_on(channel)]
    return {"channel": channel, "slug": slug, "announcements": live, "position": channel.last_sequence}
