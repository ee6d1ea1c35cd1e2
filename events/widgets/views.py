"""The live widget alone, for sites that embed it with an iframe."""

from __future__ import annotations

import contextlib
import logging

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from events.access.auth import Reader, check_read, verify_token
from events.exceptions import ChannelNotFound, PushsiteError
from events.http.numbers import whole_number
from events.models import Channel, is_origin
from pushsite.security import CONTENT_SECURITY_POLICY

logger = logging.getLogger(__name__)


def embed(request: HttpRequest, slug: str) -> HttpResponse:
    """The live widget alone, for sites that embed with an iframe (only in allowed origins' frames)."""
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        raise Http404("No such channel.")
    query = request.GET
    reader = Reader(user=request.user)
    if query.get("token"):
        # A bad token grants nothing here; the widget's stream says why.
        with contextlib.suppress(PushsiteError):
            reader.grant = verify_token(query["token"])
    try:
        # A channel this visitor may not read is a channel that does not exist.
        check_read(channel, reader)
    except ChannelNotFound:
        raise Http404("No such channel.") from None
    context = {
        "channel": channel,
        "title": query.get("title", channel.display_title)[:100],
        "theme": "dark" if query.get("theme") == "dark" else "light",
        # The widget clamps both; what is not a short whole number is not passed on
        # (rewind=0 is one: start from now, also after a reload).
        "max_items": _short_number(query.get("max", ""), default=10),
        "rewind": _short_number(query.get("rewind", ""), default=""),
        "token": query.get("token", ""),
        "event_types": query.get("events", ""),
    }
    response = render(request, "events/embed.html", context)
    # Only the channel's allowed origins may frame this page; every other page
    # keeps X-Frame-Options: DENY. Origins are validated scheme://host[:port]
    # wherever they are set; one that got into the database another way (an
    # older release, a raw update) is left out rather than written into the header.
    origins = [origin for origin in channel.allowed_origins if is_origin(origin)]
    if len(origins) != len(channel.allowed_origins):
        logger.warning("Channel %s has allowed origins that are not origins; they are ignored.", channel.slug)
    ancestors = " ".join(origins) or "'none'"
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "frame-ancestors 'none'", f"frame-ancestors {ancestors}"
    )
    response.xframe_options_exempt = True
    return response


def _short_number(raw: str, *, default: int | str) -> int | str:
    number = whole_number(raw, max_digits=6)
    return default if number is None else number
