"""Chat room pages and their JSON actions: post, choose a nickname, type, delete, mute."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from events.access.auth import Reader, check_read
from events.chat import presence
from events.chat import rules as chat
from events.chat.conf import chat_conf
from events.exceptions import (
    ChannelNotFound,
    MethodNotAllowed,
    NotAuthenticated,
    PermissionDenied,
    PushsiteError,
    ServiceUnavailable,
)
from events.http.address import client_address
from events.http.responses import error_response, from_exception
from events.models import Channel, Kind, Message
from events.publish import store as publishing
from events.publish.validate import publishing_reserved

logger = logging.getLogger(__name__)


# --- pages ----------------------------------------------------------------------


def room_list(request: HttpRequest) -> HttpResponse:
    """The chat rooms this visitor may read."""
    reader = Reader(user=request.user)
    rooms = []
    for channel in Channel.objects.active().filter(kind=Kind.CHAT):
        try:
            check_read(channel, reader)
        except PushsiteError:
            continue
        rooms.append(channel)
    return render(request, "events/rooms.html", {"rooms": rooms})


def _shown(row: Message) -> dict[str, Any] | None:
    """A stored chat message as the page template shows it (None for one it cannot show)."""
    data = row.data if isinstance(row.data, dict) else {}
    author = data.get("author")
    if not isinstance(author, dict):
        author = {}
    text = data.get("text")
    if not isinstance(text, str):
        return None
    return {
        "id": row.sequence,
        "text": text,
        "name": str(author.get("name", "")),
        "guest": bool(author.get("guest")),
        "label": row.publisher,
        "at": row.created_at,
    }


@ensure_csrf_cookie
def room_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The last messages, rendered; the page's script then resumes live from the last one."""
    try:
        channel = chat.get_room(slug, request.user)
    except ChannelNotFound as exc:
        raise Http404(exc.detail) from exc
    except NotAuthenticated:
        return redirect_to_login(request.get_full_path())
    except PermissionDenied as exc:
        return render(request, "events/room_forbidden.html", {"detail": exc.detail}, status=403)
    rows, last_id = chat.recent(channel, chat_conf.CHAT_HISTORY)
    author = chat.identity(request.user, request.session)
    may_post = author is not None and (not author.guest or channel.guests_may_post)
    context = {
        "room": channel,
        "messages": [shown for row in rows if (shown := _shown(row)) is not None],
        "last_id": last_id,
        "author": author,
        "may_post": may_post,
        "needs_nickname": not may_post and channel.guests_may_post and not request.user.is_authenticated,
        "is_staff": request.user.is_authenticated and request.user.is_active and request.user.is_staff,
        "max_length": chat.max_length(channel),
        "presence": presence.snapshot(channel.pk),
    }
    return render(request, "events/room.html", context)


# --- JSON actions ---------------------------------------------------------------


@dataclass
class Outcome:
    """What an action did: the answer, and what to send once it is stored."""

    payload: dict[str, Any]
    status: int = 200
    fan_out: list[Message] = field(default_factory=list)
    ephemeral: tuple[Channel, dict[str, Any], str] | None = None


Action = Callable[[HttpRequest, str], Outcome]


async def _run(request: HttpRequest, slug: str, action: Action, *, methods: str = "POST") -> HttpResponse:
    if request.method not in methods.split(", "):
        return from_exception(
            MethodNotAllowed(f"{request.method} is not allowed here; use {methods}.", allow=methods)
        )
    try:
        outcome = await sync_to_async(_as_room)(action, request, slug)
    except PushsiteError as error:
        return from_exception(error)
    except DatabaseError:
        logger.exception("Database error while handling %s %s", request.method, request.path)
        return from_exception(ServiceUnavailable("The database is not available; try again shortly."))
    for message in outcome.fan_out:
        await publishing.fan_out(message)
    if outcome.ephemeral is not None:
        channel, data, event = outcome.ephemeral
        with publishing_reserved(chat.EVENT_PREFIX):
            await publishing.fan_out_ephemeral(channel, data, event=event)
    response = JsonResponse(outcome.payload, status=outcome.status)
    response["Cache-Control"] = "no-store"
    return response


def _as_room(action: Action, request: HttpRequest, slug: str) -> Outcome:
    """Run ``action`` as the room endpoints: the only code that may publish ``chat.*`` events."""
    with publishing_reserved(chat.EVENT_PREFIX):
        return action(request, slug)


def _post(request: HttpRequest, slug: str) -> Outcome:
    chat.require_csrf(request)
    channel = chat.get_room(slug, request.user)
    author = chat.poster(channel, request)
    body = chat.json_body(request, {"text"})
    message = chat.post(channel, author, body.get("text"), client_address(request))
    return Outcome(publishing.message_json(message, slug), status=201, fan_out=[message])


def _guest(request: HttpRequest, slug: str) -> Outcome:
    chat.require_csrf(request)
    channel = chat.get_room(slug, request.user)
    if request.user.is_authenticated:
        raise PermissionDenied("You are logged in: you post under your own name.")
    body = chat.json_body(request, {"nickname"})
    author = chat.set_nickname(channel, request.session, body.get("nickname"), client_address(request))
    return Outcome({"author": author.as_json()})


def _typing(request: HttpRequest, slug: str) -> Outcome:
    chat.require_csrf(request)
    channel = chat.get_room(slug, request.user)
    author = chat.poster(channel, request)
    if chat.is_muted(channel, author) or not chat.may_type(author):
        return Outcome({"sent": False})
    return Outcome({"sent": True}, ephemeral=(channel, {"author": author.as_json()}, chat.TYPING_EVENT))


def _delete(request: HttpRequest, slug: str, *, sequence: int) -> Outcome:
    chat.require_csrf(request)
    staff = chat.require_staff(request)
    channel = chat.get_room(slug, staff)
    event = chat.delete(channel, sequence, staff)
    return Outcome(publishing.message_json(event, slug), fan_out=[event])


def _mute(request: HttpRequest, slug: str) -> Outcome:
    chat.require_csrf(request)
    staff = chat.require_staff(request)
    channel = chat.get_room(slug, staff)
    body = chat.json_body(request, {"author", "minutes"})
    mute = chat.mute(channel, body.get("author"), body.get("minutes"), staff)
    until = mute.until.isoformat() if mute.until else None
    return Outcome({"author": mute.author, "until": until}, status=201)


def _presence(request: HttpRequest, slug: str) -> Outcome:
    channel = chat.get_room(slug, request.user)
    return Outcome(presence.snapshot(channel.pk))


# The CSRF check runs inside each action (chat.require_csrf), so that a
# failure is answered in the API's JSON shape rather than Django's HTML page.


@csrf_exempt
async def post_message(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST /rooms/<slug>/messages`` ``{"text"}``: 201 with the stored envelope."""
    return await _run(request, slug, _post)


@csrf_exempt
async def guest(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST /rooms/<slug>/guest`` ``{"nickname"}``: post as a guest from now on (this session)."""
    return await _run(request, slug, _guest)


@csrf_exempt
async def typing(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST /rooms/<slug>/typing``: an ephemeral "is typing" event, at most one per author every 2 s."""
    return await _run(request, slug, _typing)


@csrf_exempt
async def delete_message(request: HttpRequest, slug: str, sequence: int) -> HttpResponse:
    """``POST /rooms/<slug>/messages/<id>/delete`` (staff): every open page removes it."""
    return await _run(request, slug, functools.partial(_delete, sequence=sequence))


@csrf_exempt
async def mute(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST /rooms/<slug>/mute`` ``{"author", "minutes"}`` (staff)."""
    return await _run(request, slug, _mute)


async def who_is_here(request: HttpRequest, slug: str) -> HttpResponse:
    """``GET /rooms/<slug>/presence``: the people in the room now."""
    return await _run(request, slug, _presence, methods="GET, HEAD")


@csrf_exempt
def action_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """A room action's URL with something that is not a room's slug in it: JSON, like the actions."""
    return error_response(404, "not_found", f"There is no room action at {request.path[:200]}.")
