"""Chat rooms: who may post, what a message may hold, moderation (runs in worker threads)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from events.access import ratelimit
from events.access.auth import Reader, check_read, unknown_channel
from events.chat.conf import chat_conf
from events.chat.models import ChatMute, ChatNickname
from events.exceptions import (
    ChannelNotFound,
    InvalidInput,
    Muted,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from events.models import Channel, Kind, Message
from events.publish import store as publishing
from events.publish import validate

# Reserved for the room endpoints (apps.py): they publish inside publishing_reserved(EVENT_PREFIX).
EVENT_PREFIX = "chat."
MESSAGE_EVENT = "chat.message"
DELETED_EVENT = "chat.deleted"
TYPING_EVENT = "chat.typing"
GUEST_SESSION_KEY = "pushsite_chat_nickname"
# Who a guest is, whatever nickname they go by: kept in their session, never shown.
GUEST_ID_SESSION_KEY = "pushsite_chat_guest"
NICKNAME_MAX_LENGTH = 32
# Letters, digits, spaces and . _ - ; starting with a letter or digit.
_NICKNAME = re.compile(r"[^\W_][\w .-]*")
_AUTHOR = re.compile(r"(user|guest):.{1,150}")
MAX_BODY_BYTES = 16 * 1024
TYPING_EVERY_SECONDS = 2
# A nickname claim's last use moves forward at most this often.
NICKNAME_TOUCH_EVERY = timedelta(hours=1)
POSTS_BY_AUTHOR = ratelimit.Rate(
    "chat-author",
    lambda: chat_conf.CHAT_RATE_MESSAGES,
    lambda: chat_conf.CHAT_RATE_SECONDS,
    "You are sending messages too fast.",
)
# People behind one NAT share an address, so its limit is higher.
POSTS_BY_ADDRESS = ratelimit.Rate(
    "chat-ip",
    lambda: chat_conf.CHAT_IP_RATE_MESSAGES,
    lambda: chat_conf.CHAT_RATE_SECONDS,
    "Too many messages from your network.",
)
NICKNAMES_BY_ADDRESS = ratelimit.Rate(
    "chat-nickname-ip",
    lambda: chat_conf.CHAT_NICKNAME_CLAIMS,
    lambda: chat_conf.CHAT_NICKNAME_CLAIM_SECONDS,
    "Too many nicknames claimed from your network.",
)


@dataclass(frozen=True)
class Author:
    """Who is talking: a logged-in user or a guest with a nickname."""

    label: str  # the publisher string, "user:<name>" or "guest:<nick>"
    name: str
    guest: bool
    # The person behind the label, what moderation binds to: "user:<pk>" or
    # "guest:<id kept in their session>" (a new nickname is the same person).
    person: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "guest": self.guest}


def identity(user: User | AnonymousUser, session: SessionBase | None) -> Author | None:
    """The logged-in user, else the guest nickname kept in the session, else None."""
    if user.is_authenticated and user.is_active:
        name = user.get_username()
        return Author(label=f"user:{name}", name=name, guest=False, person=f"user:{user.pk}")
    nickname = session.get(GUEST_SESSION_KEY) if session is not None else None
    guest_id = session.get(GUEST_ID_SESSION_KEY) if session is not None else None
    # A nickname without a guest id (a session from before) is chosen again.
    if isinstance(nickname, str) and nickname and isinstance(guest_id, str) and guest_id:
        return Author(label=f"guest:{nickname}", name=nickname, guest=True, person=f"guest:{guest_id}")
    return None


def get_room(slug: str, user: User | AnonymousUser) -> Channel:
    """The active chat channel ``slug`` if ``user`` may read it (404 / 401 / 403 otherwise)."""
    channel = Channel.objects.active().filter(slug=slug).first()
    if channel is None:
        raise unknown_channel(slug)
    check_read(channel, Reader(user=user))  # first: a hidden channel stays "no such channel"
    if channel.kind != Kind.CHAT:
        raise ChannelNotFound(
            f"{slug!r} is a feed channel, not a chat room: read it at /channels/{slug}/ "
            f"and publish with POST /api/channels/{slug}/messages."
        )
    return channel


def poster(channel: Channel, request: HttpRequest) -> Author:
    """The author of a post in ``channel``, or the reason this visitor may not post."""
    author = identity(request.user, request.session)
    if author is not None and (not author.guest or channel.guests_may_post):
        if author.guest:
            claim_nickname(channel, author)
        return author
    if channel.guests_may_post:
        raise NotAuthenticated("Choose a nickname or log in to post in this room.")
    raise NotAuthenticated("Log in to post in this room; it does not take guests.")


def require_csrf(request: HttpRequest) -> None:
    """Django's own CSRF check, answered in the API's JSON shape instead of an HTML page."""
    rejection = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]  # no view: only its csrf_exempt is read
    if rejection is not None:
        raise PermissionDenied("CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.")


def require_staff(request: HttpRequest) -> User:
    """The staff user making ``request`` (401 / 403 for anyone else)."""
    user = request.user
    if not user.is_authenticated:
        raise NotAuthenticated("Moderation needs a staff login.")
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Only staff may moderate a room.")
    return user


def json_body(request: HttpRequest, fields: set[str]) -> dict[str, Any]:
    """The request's JSON object with only ``fields``, read by the one JSON parser (events/publish/validate.py)."""
    shape = "{" + ", ".join(f'"{name}": ...' for name in sorted(fields)) + "}"
    return validate.request_object(request, fields=fields, shape=shape, limit=MAX_BODY_BYTES)


def max_length(channel: Channel) -> int:
    return channel.chat_max_length or chat_conf.CHAT_MAX_LENGTH


def clean_text(channel: Channel, text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInput("text must be a string.")
    cleaned = text.replace("\r\n", "\n").strip()
    if not cleaned:
        raise InvalidInput("The message is empty.")
    limit = max_length(channel)
    if len(cleaned) > limit:
        raise PayloadTooLarge(f"The message is {len(cleaned)} characters long; the limit is {limit}.")
    return cleaned


def is_muted(channel: Channel, author: Author) -> bool:
    """Whether the person is muted here, under any nickname (mutes from before match by label)."""
    return (
        ChatMute.objects.filter(channel=channel)
        .filter(Q(person=author.person) | Q(person="", author=author.label))
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        .exists()
    )


def check_rate(author: Author, client_address: str) -> None:
    """Per participant and per client address, so neither one person nor one machine can flood a room."""
    # By person, not label: a new nickname is the same participant (issue 13).
    ratelimit.count(POSTS_BY_AUTHOR, author.person or author.label)
    ratelimit.count(POSTS_BY_ADDRESS, client_address)


def post(channel: Channel, author: Author, text: Any, client_address: str) -> Message:
    """Validate and store one chat message (the caller fans it out)."""
    text = clean_text(channel, text)
    if is_muted(channel, author):
        raise Muted("A moderator has muted you in this room.")
    check_rate(author, client_address)
    return publishing.store_message(
        channel,
        {"text": text, "author": author.as_json()},
        event=MESSAGE_EVENT,
        publisher=author.label,
    )


def delete(channel: Channel, sequence: int, by: User) -> Message:
    """Blank a message and store a ``chat.deleted`` event for it, once; returns that event.

    It counts against ``by``'s publish rate (429 past it, nothing changed).

    The row stays (text blanked) rather than going: a hole in the sequence
    would make every resuming client report lost history (pushsite.reset).
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(channel=channel, sequence=sequence, event=MESSAGE_EVENT)
            .first()
        )
        if message is None:
            raise NotFound(f"Room {channel.slug!r} has no message {sequence}.")
        data = message.data if isinstance(message.data, dict) else {}
        if data.get("deleted"):
            # Once: each repeat would store and send another chat.deleted.
            raise NotFound(f"Room {channel.slug!r} has no message {sequence}: it was deleted already.")
        # A deletion is a publish by this staff user, counted like the others.
        ratelimit.count_staff_publish(by.pk)
        message.data = {"text": "", "author": data.get("author"), "deleted": True}
        message.save(update_fields=["data"])
        return publishing.store_message(
            channel, {"id": sequence}, event=DELETED_EVENT, publisher=f"user:{by.get_username()}"
        )


def mute(channel: Channel, author_label: Any, minutes: Any, by: User) -> ChatMute:
    """Stop ``author_label`` posting in ``channel`` for ``minutes`` (None: until unmuted in the admin)."""
    if not isinstance(author_label, str) or not _AUTHOR.fullmatch(author_label):
        raise InvalidInput("author must be a message's author label, like 'user:alice' or 'guest:bob'.")
    until = None
    if minutes is not None:
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 525600:
            raise InvalidInput("minutes must be a whole number from 1 to 525600, or null for good.")
        until = timezone.now() + timedelta(minutes=minutes)
    person = person_behind(channel, author_label)
    return ChatMute.objects.create(channel=channel, author=author_label, person=person, until=until, by=by)


def person_behind(channel: Channel, author_label: str) -> str:
    """The person a message's author label stands for in ``channel``; InvalidInput if nobody."""
    kind, _, name = author_label.partition(":")
    if kind == "user":
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: name}).first()
        if user is not None:
            return f"user:{user.pk}"
    else:
        claimed = ChatNickname.objects.filter(channel=channel, name_key=name.casefold()).first()
        if claimed is not None:
            return claimed.person
    raise InvalidInput(f"Nobody called {name!r} has taken part in this room.")


def claim_nickname(channel: Channel, author: Author) -> None:
    """Hold the guest's nickname in ``channel`` for that guest; refused when someone else holds it.

    A claim is kept when the guest moves on to another name, so an old
    message's name never passes to someone else; a claim long out of use is
    released (events/chat/nicknames.py).
    """
    now = timezone.now()
    claimed, created = ChatNickname.objects.get_or_create(
        channel=channel,
        name_key=author.name.casefold(),
        defaults={"name": author.name, "person": author.person, "last_used_at": now},
    )
    if claimed.person != author.person:
        raise InvalidInput(f"The nickname {author.name!r} is in use in this room; choose another.")
    if not created and now - claimed.last_used_at > NICKNAME_TOUCH_EVERY:
        # At most hourly: one UPDATE per post would be waste.
        ChatNickname.objects.filter(pk=claimed.pk).update(last_used_at=now)


def set_nickname(channel: Channel, session: SessionBase, nickname: Any, client_address: str) -> Author:
    """Keep a guest's nickname in the session, if the room takes guests and the name is free.

    Every well-formed claim from ``client_address`` counts against NICKNAMES_BY_ADDRESS
    (a taken name too: probing for free names is what a squatter does).
    """
    if not channel.guests_may_post:
        raise PermissionDenied("This room does not take guests; log in to post.")
    if not isinstance(nickname, str):
        raise InvalidInput("nickname must be a string.")
    nickname = " ".join(nickname.split())
    if not 2 <= len(nickname) <= NICKNAME_MAX_LENGTH or not _NICKNAME.fullmatch(nickname):
        raise InvalidInput(
            f"A nickname has 2 to {NICKNAME_MAX_LENGTH} letters, digits, spaces, dots, dashes "
            "or underscores, and starts with a letter or digit."
        )
    ratelimit.count(NICKNAMES_BY_ADDRESS, client_address)
    # A guest may not pass for a registered user.
    if get_user_model().objects.filter(username__iexact=nickname).exists():
        raise InvalidInput(f"The nickname {nickname!r} belongs to a registered user; choose another.")
    guest_id = session.get(GUEST_ID_SESSION_KEY)
    if not isinstance(guest_id, str) or not guest_id:
        guest_id = secrets.token_urlsafe(16)
    author = Author(label=f"guest:{nickname}", name=nickname, guest=True, person=f"guest:{guest_id}")
    claim_nickname(channel, author)
    session[GUEST_ID_SESSION_KEY] = guest_id
    session[GUEST_SESSION_KEY] = nickname
    return author


def may_type(author: Author) -> bool:
    """At most one "is typing" event per person every few seconds: True when this one may go."""
    # Keyed by the person, not the label: a guest switching nicknames is still one typist.
    digest = hashlib.sha256((author.person or author.label).encode()).hexdigest()[:32]
    return bool(cache.add(f"pushsite:typing:{digest}", 1, timeout=TYPING_EVERY_SECONDS))


def recent(channel: Channel, limit: int) -> tuple[list[Message], int]:
    """The last ``limit`` visible messages and the position they run up to (the resume point)."""
    last = Channel.objects.filter(pk=channel.pk).values_list("last_sequence", flat=True)[0]
    rows = list(
        Message.objects.filter(channel=channel, event=MESSAGE_EVENT, sequence__lte=last).order_by(
            "-sequence"
        )[:limit]
    )
    rows.reverse()
    return [row for row in rows if not (isinstance(row.data, dict) and row.data.get("deleted"))], last
