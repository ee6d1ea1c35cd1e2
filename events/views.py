"""Pages (the demo) and operational endpoints: /healthz and /metrics."""

from __future__ import annotations

import asyncio
import logging
import re

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pushsite.security import CONTENT_SECURITY_POLICY

from . import demo
from .models import Channel, Message, Visibility
from .relay import get_relay
from .responses import error_response

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0
API_STREAM_PATH = re.compile(r"/api/channels/[-a-zA-Z0-9_]+/stream")
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
    if channel.is_chat:
        return redirect("events:room", slug=channel.slug)
    context = {
        "channel": channel,
        "has_messages": Message.objects.filter(channel=channel).exists(),
        "rewind": CHANNEL_PAGE_REWIND,
    }
    return render(request, "events/channel.html", context)


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
    response.xframe_options_exempt = True  # type: ignore[attr-defined]
    return response


@csrf_exempt  # it changes nothing, and a POST to a mistyped path should learn why
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/: a JSON 404, naming the trailing-slash slip when that is it."""
    path = request.path
    if path.endswith("/") and _is_api_endpoint(path.rstrip("/")):
        detail = f"There is no API endpoint at {path}; leave out the trailing slash: {path.rstrip('/')}"
    else:
        detail = f"There is no API endpoint at {path}. The endpoints are listed in the README."
    return error_response(404, "not_found", detail[:300])


def _is_api_endpoint(path: str) -> bool:
    if API_STREAM_PATH.fullmatch(path):  # routed by ASGI, not by Django's URLconf
        return True
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func is not api_not_found


def streamed_demo(request: HttpRequest) -> HttpResponse:
    channel = Channel.objects.active().filter(slug=demo.DEMO_CHANNEL).first()
    return render(request, "events/streamed.html", {"channel": channel})


@require_POST
async def streamed_demo_ask(request: HttpRequest) -> JsonResponse:
    """Start a streamed demo answer (CSRF-checked by the middleware); 202 with its stream id."""
    channel = await Channel.objects.active().filter(slug=demo.DEMO_CHANNEL).afirst()
    if channel is None:
        return error_response(
            404, "channel_not_found", "Create the demo channel first: .venv/bin/python manage.py seed_demo."
        )
    try:
        stream = await demo.start_answer(channel, request.POST.get("question", ""))
    except demo.AnswerInProgress:
        return error_response(409, "busy", "An answer is being streamed right now; try again in a moment.")
    return JsonResponse({"stream": stream, "channel": channel.slug}, status=202)


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer answer; 503 naming the part that does not."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(sync_to_async(_database_answers)(), HEALTH_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        logger.warning("Health check: database failed: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    relay = get_relay()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await relay.ping()
        checks["channel_layer"] = "ok"
    except Exception as exc:
        logger.warning("Health check: channel layer failed: %r", exc)
        checks["channel_layer"] = f"error: {type(exc).__name__}"
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        body = {
            "error": "unavailable",
            "detail": f"Not answering: {', '.join(failing)}.",
            "status": "unavailable",
            **checks,
        }
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
    else:
        response = JsonResponse({"status": "ok", **checks, "connections": len(relay.streams)})
    response["Cache-Control"] = "no-store"
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
