"""The live widget alone, for sites that embed it with an iframe."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from events.models import Channel
from pushsite.security import CONTENT_SECURITY_POLICY


def embed(request: HttpRequest, slug: str) -> HttpResponse:
    """The live widget alone, for sites that embed with an iframe (only in allowed origins' frames)."""
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        raise Http404("No such channel.")
    query = request.GET
    context = {
        "channel": channel,
        "title": query.get("title", channel.display_title)[:100],
        "theme": "dark" if query.get("theme") == "dark" else "light",
        "max_items": query.get("max", "10") if query.get("max", "10").isdigit() else "10",
        "rewind": query.get("rewind", "") if query.get("rewind", "").isdigit() else "",
        "token": query.get("token", ""),
        "event_types": query.get("events", ""),
    }
    response = render(request, "events/embed.html", context)
    # Only the channel's allowed origins may frame this page; every other page
    # keeps X-Frame-Options: DENY. (Origins are validated scheme://host[:port].)
    ancestors = " ".join(channel.allowed_origins) or "'none'"
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "frame-ancestors 'none'", f"frame-ancestors {ancestors}"
    )
    response.xframe_options_exempt = True
    return response
