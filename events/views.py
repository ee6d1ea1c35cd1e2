"""The core's pages: the channel list and a channel's live page."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from events.access.auth import Reader, check_read
from events.exceptions import ChannelNotFound
from events.models import Channel, Visibility


def home(request: HttpRequest) -> HttpResponse:
    channels = Channel.objects.active().filter(visibility=Visibility.PUBLIC)
    return render(request, "events/home.html", {"channels": channels})


def channel_page(request: HttpRequest, slug: str) -> HttpResponse:
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        raise Http404("No such channel.")
    try:
        # A channel this visitor may not read is a channel that does not exist.
        check_read(channel, Reader(user=request.user))
    except ChannelNotFound:
        raise Http404("No such channel.") from None
    return render(request, "events/channel.html", {"channel": channel})
