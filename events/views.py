"""The core's pages: the channel list, a channel's live page, and the JSON 404 of /api/."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from events.access.auth import Reader, check_read
from events.exceptions import ChannelNotFound, InvalidInput
from events.http import openapi
from events.http.hosts import host_refused
from events.http.responses import allow_methods, error_response, from_exception
from events.models import Channel, Message, Visibility

API_STREAM_PATH = re.compile(r"/api/channels/[-a-zA-Z0-9_]+/stream")
STREAM_PATH = re.compile(r"/events/(?:[-a-zA-Z0-9_]+/)?")  # events/routing.py
# Stored messages a channel page shows when it opens, before going live.
CHANNEL_PAGE_REWIND = 50


def home(request: HttpRequest) -> HttpResponse:
    """Feeds and chat rooms, listed apart: each kind has its own page."""
    channels = list(Channel.objects.active().filter(visibility=Visibility.PUBLIC))
    context = {
        "feeds": [c for c in channels if not c.is_chat],
        "rooms": [c for c in channels if c.is_chat],
    }
    return render(request, "events/home.html", context)


def channel_page(request: HttpRequest, slug: str) -> HttpResponse:
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        raise Http404("No such channel.")
    try:
        # A channel this visitor may not read is a channel that does not exist.
        check_read(channel, Reader(user=request.user))
    except ChannelNotFound:
        raise Http404("No such channel.") from None
    if channel.is_chat:
        # A room has a page of its own (by URL name: the core imports no feature).
        return redirect("events:room", slug=channel.slug)
    context = {
        "channel": channel,
        "has_messages": Message.objects.filter(channel=channel).exists(),
        "rewind": CHANNEL_PAGE_REWIND,
    }
    return render(request, "events/channel.html", context)


@allow_methods("GET, HEAD")
def api_description(request: HttpRequest) -> HttpResponse:
    """``GET /api/openapi.json``: the JSON API's OpenAPI 3.1 description (events/http/openapi.py)."""
    return JsonResponse(openapi.description())


@csrf_exempt  # it changes nothing, and a POST to a mistyped path should learn why
def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/: a JSON 404, naming the trailing-slash slip when that is it."""
    path = request.path
    if path.endswith("/") and _is_api_endpoint(path.rstrip("/")):
        detail = f"There is no API endpoint at {path}; leave out the trailing slash: {path.rstrip('/')}"
    else:
        detail = f"There is no API endpoint at {path}. The endpoints are listed in the README."
    return error_response(404, "not_found", detail[:300])


@csrf_exempt  # it changes nothing, and a mistyped stream URL should learn why
def stream_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any path under /events that is not a stream: a JSON 404, naming the stream URL a slash away."""
    path = request.path
    if STREAM_PATH.fullmatch(path + "/"):
        query = request.META.get("QUERY_STRING", "")
        detail = (
            f"There is no stream at {path}; add the trailing slash: {path}/{'?' + query if query else ''}"
        )
    else:
        detail = f"There is no stream at {path}. Streams are /events/<slug>/ and /events/?channel=<slug>&channel=<slug>."
    return error_response(404, "not_found", detail[:300])


def _is_api_endpoint(path: str) -> bool:
    if API_STREAM_PATH.fullmatch(path):  # routed by ASGI, not by Django's URLconf
        return True
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func is not api_not_found


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (``handler400``) in the contract's JSON shape, as the stream path answers.

    Django raises these before any view (an unknown Host, too many query or form
    fields); its own page was an empty HTML "Bad Request (400)", on the JSON API too.
    """
    if isinstance(exception, DisallowedHost):
        return from_exception(host_refused())
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return from_exception(InvalidInput(f"The request has more than {limit} query or form fields."))
    return from_exception(InvalidInput("The request is malformed."))
