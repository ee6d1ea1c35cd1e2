"""What a stream request asks for, and whether it may have it: parsing, admission, authorization.

The endpoint that serves ``GET /events/<slug>/`` and ``GET /events/?channel=a&channel=b``
(events/deliver/endpoint.py) calls these; they know nothing of ASGI beyond the scope.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from asgiref.typing import (
    ASGISendEvent,
)
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from events import signals
from events.access.auth import (
    Reader,
    active_channels,
    api_key_from,
    readable_channels,
    session_from_key,
    token_expiry,
    unknown_channel,
    user_from_session,
    verify_token,
)
from events.access.revocation import Access
from events.conf import conf
from events.deliver import directory, history
from events.deliver.admission import BatchedAdmission
from events.deliver.relay import get_relay
from events.deliver.stream import AsgiSend, Reset, StreamChannel
from events.exceptions import (
    InvalidInput,
    PermissionDenied,
)
from events.http.asgi import RoutedHTTPScope, request_headers
from events.http.hosts import check_host, is_secure
from events.http.numbers import whole_number
from events.models import Channel
from events.signals import StreamAttachment
from events.wire import cursors, ndjson, sse

# Not a configured alias, so Channels gives a consumer (the streaming publish) no
# layer channel of its own: the per-process relay is the group member (ARCHITECTURE.md
# §5: a layer channel per connection makes every receive scan all of them).
NO_CHANNEL_LAYER = "pushsite.streams-use-the-relay"
SSE_FORMAT = "sse"
NDJSON_FORMAT = "ndjson"
FORMATS = (SSE_FORMAT, NDJSON_FORMAT)
# pushsite.reset reasons for a position that means nothing in the channel as it is.
RESET_UNKNOWN_POSITION = "unknown-position"
RESET_OTHER_EPOCH = "epoch-changed"
# The access of every reader admitted without credentials: one shared object (Access is frozen).
ANONYMOUS = Access(session_key=None, token=None, key_id=None)


@dataclass(frozen=True)
class StreamRequest:
    """What a subscriber asked for, parsed from the ASGI scope (no database)."""

    slugs: list[str]
    cursor: str | None
    token: str | None
    authorization: str | None
    session_key: str | None
    origin: str | None
    own_origin: str
    format: str = SSE_FORMAT
    # ?rewind=N: the last N stored messages of each channel first (ignored
    # when a cursor is given: Last-Event-ID wins).
    rewind: int = 0


def parse_stream_request(scope: RoutedHTTPScope) -> StreamRequest:
    headers = request_headers(scope)
    host = check_host(headers, scope.get("server"), scope.get("scheme"))

    query_string = scope.get("query_string", b"")
    try:
        # Most streams have none (an EventSource on /events/<slug>/): no parser then.
        query = (
            parse_qs(query_string.decode(), keep_blank_values=True, max_num_fields=100)
            if query_string
            else {}
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("The query string is malformed.") from exc
    path_slug = scope.get("url_route", {}).get("kwargs", {}).get("slug")
    requested = [path_slug] if path_slug else query.get("channel", [])
    slugs = list(dict.fromkeys(requested))  # drop repeats, keep order
    if not slugs:
        raise InvalidInput("Name at least one channel: /events/<slug>/ or /events/?channel=<slug>.")
    limit = conf.MAX_CHANNELS_PER_STREAM
    if len(slugs) > limit:
        raise InvalidInput(f"A stream may carry at most {limit} channels; {len(slugs)} were asked for.")
    for slug in slugs:
        if not cursors.SLUG.fullmatch(slug):
            raise unknown_channel(slug)

    output = _output_format(query, headers)
    cursor = headers.get("last-event-id") or _last(query, "lastEventId")
    if cursor is None and output == NDJSON_FORMAT:
        # NDJSON readers resume with the cursor of the last line they read.
        cursor = _last(query, "after")
        cursors.parse_cursor(cursor, slugs, max_length=conf.MAX_CURSOR_LENGTH, name="after")  # errors name it
    rewind = parse_rewind(_last(query, "rewind"))
    token = _last(query, "token")
    session_key = session_cookie(headers.get("cookie"))
    origin = headers.get("origin")
    scheme = scope.get("scheme") or "http"
    if origin is not None:
        # The scheme Django's request.scheme says (SECURE_PROXY_SSL_HEADER behind a TLS
        # proxy), so a page's own origin is same-origin here as in Django's CSRF check.
        scheme = "https" if is_secure(scheme, headers) else "http"
    return StreamRequest(
        slugs=slugs,
        cursor=cursor,
        token=token,
        authorization=headers.get("authorization"),
        session_key=session_key,
        origin=origin,
        own_origin=f"{scheme}://{host}",
        format=output,
        rewind=rewind,
    )


def session_cookie(raw: str | None) -> str | None:
    """The session cookie's value in a Cookie header, read as Django's request reads it; None without one.

    Django's ``parse_cookie``, not ``http.cookies.SimpleCookie``: SimpleCookie drops every
    cookie of a header holding one it cannot parse (a JSON value, a space, an "@" in a
    name), so a member whose browser had such a cookie was logged in for Django's views
    and anonymous for the stream (a private channel's stream was a 404, its history a 200).
    """
    if not raw:
        return None
    return parse_cookie(raw).get(settings.SESSION_COOKIE_NAME) or None


def _last(query: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, None if it is absent (a repeated parameter: the last wins)."""
    values = query.get(name)
    return values[-1] if values else None


def parse_rewind(raw: str | None) -> int:
    """``?rewind=N``: a whole number from 0 to ``MAX_REWIND``; absent or empty is 0."""
    if raw is None or raw == "":
        return 0
    limit = conf.MAX_REWIND
    value = whole_number(raw, max_digits=9)
    if value is None or value > limit:
        raise InvalidInput(f"rewind must be a whole number from 0 to {limit}, not {raw[:40]!r}.")
    return value


def _output_format(query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """SSE unless ``?format=ndjson`` or an Accept header that names NDJSON and not SSE."""
    explicit = _last(query, "format")
    if explicit is not None:
        if explicit not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {explicit[:40]!r}.")
        return explicit
    accept = headers.get("accept", "")
    if len(accept) > MAX_REMEMBERED_ACCEPT:
        return _accepted_format.__wrapped__(accept)
    return _accepted_format(accept)


# Why: an EventSource sends the same Accept on every open; parsed once per distinct
# value, not per open (issue 16). Bounded in number and in size: uvicorn's httptools
# parser takes a header of any length, so a long value is parsed, not kept (256 of
# 20 MB were 5 GB held).
MAX_REMEMBERED_ACCEPT = 512


@functools.lru_cache(maxsize=256)
def _accepted_format(accept: str) -> str:
    """NDJSON if ``accept`` names it and not SSE; SSE otherwise."""
    accepted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if ndjson.NDJSON in accepted and sse.EVENT_STREAM not in accepted:
        return NDJSON_FORMAT
    return SSE_FORMAT


def ndjson_send(send: AsgiSend) -> AsgiSend:
    """``send``, with every SSE frame of a response body rewritten as its NDJSON line."""

    async def send_lines(message: ASGISendEvent) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": ndjson.from_sse(message["body"])}
        await send(message)

    return send_lines


@dataclass(frozen=True)
class Authorized:
    channels: list[StreamChannel]
    positions: dict[int, int]
    # Channels where the client's position means nothing here (beyond the
    # stored end, or another epoch): an explicit reset first.
    resets: dict[int, Reset]
    allow_origin: str | None
    expires_at: float | None
    access: Access
    # What features keep for as long as the stream is open (signals.stream_authorized).
    attachments: list[StreamAttachment]
    # Slug -> title, for the open event (a widget's default heading).
    titles: dict[str, str] | None = None
    history: bool = False
    # The rows behind ``channels``, for the process's channel directory (events/deliver/directory.py).
    rows: list[Channel] = field(default_factory=list)


def authorize(request: StreamRequest, active: Mapping[str, Channel] | None = None) -> Authorized:
    """Check the request against the database: credentials, channels, origin, cursor.

    ``active``: the active channels by slug, read once for a batch of requests
    (events/deliver/admission.py); None reads this request's own.
    """
    reader = Reader(key=api_key_from(request.authorization))
    if request.token:
        reader.grant = verify_token(request.token)
    session = session_from_key(request.session_key)
    reader.user = user_from_session(session)
    # After the credentials, whose errors name no channel: an unknown channel
    # and one this reader may not read are refused alike.
    channels = readable_channels(request.slugs, reader, active=active)

    allow_origin = check_origin(request, channels)

    start = cursors.parse_cursor(request.cursor, request.slugs, max_length=conf.MAX_CURSOR_LENGTH)
    rewind = request.rewind if not request.cursor else 0
    positions: dict[int, int] = {}
    resets: dict[int, Reset] = {}
    for channel in channels:
        asked = start.get(channel.slug)
        if asked is None:
            live = history.rewind_position(channel, rewind) if rewind else channel.last_sequence
            positions[channel.pk] = live
        elif asked.epoch is not None and asked.epoch != channel.epoch:
            # A position in another incarnation of this slug: the client has
            # seen none of this one, so it gets all of its retained history.
            resets[channel.pk] = Reset(asked, 0, RESET_OTHER_EPOCH)
            positions[channel.pk] = 0
        elif asked.sequence > channel.last_sequence:
            resets[channel.pk] = Reset(asked, channel.last_sequence, RESET_UNKNOWN_POSITION)
            positions[channel.pk] = channel.last_sequence
        else:
            positions[channel.pk] = asked.sequence
    # Each credential is its own grant: the token's expiry ends the stream when
    # one of its channels is allowed by the token alone, whatever else came
    # with the request. Sessions and keys are re-checked by the access sweep.
    expires_at = token_expiry(channels, reader)
    access = Access(
        session_key=request.session_key if reader.user.is_authenticated else None,
        token=reader.grant,
        key_id=reader.key.pk if reader.key is not None else None,
    )
    responses = signals.stream_authorized.send(
        sender=Authorized, channels=channels, user=reader.user, session=session
    )
    return Authorized(
        access=access,
        channels=[StreamChannel(id=c.pk, slug=c.slug, epoch=c.epoch) for c in channels],
        positions=positions,
        resets=resets,
        allow_origin=allow_origin,
        expires_at=expires_at,
        # django-stubs types every signal response as str | None; these receivers return attachments.
        attachments=[attachment for _receiver, attachment in responses if attachment is not None],  # type: ignore[misc]
        titles={c.slug: c.display_title for c in channels},
        # Stored messages follow the open event (a resume, a rewind, a reset).
        history=any(positions[c.pk] < c.last_sequence for c in channels),
        rows=channels,
    )


# ``authorize`` for the streams opening together: one thread hop and one channel query per batch.
admit_from_database: BatchedAdmission[StreamRequest, Authorized] = BatchedAdmission(authorize)


def admit_from_directory(request: StreamRequest) -> Authorized | None:
    """An anonymous live reader of public channels, admitted without the database; None for any other.

    events/deliver/directory.py says when this applies and how it stays fresh.
    Runs on the event loop: ``stream_authorized`` receivers get only public,
    non-chat channels here and must not touch the database for them.
    """
    if request.cursor or request.rewind or request.token or request.authorization or request.session_key:
        return None
    relay = get_relay()
    channels = relay.directory.lookup(request.slugs, max_age=directory.max_age())
    if channels is None:
        return None
    positions: dict[int, int] = {}
    for channel in channels:
        position = relay.live_position(channel)
        if position is None:
            return None
        positions[channel.pk] = position
    allow_origin = check_origin(request, channels)
    user = AnonymousUser()
    responses = signals.stream_authorized.send(sender=Authorized, channels=channels, user=user, session=None)
    return Authorized(
        access=ANONYMOUS,
        channels=[shared_stream_channel(c.pk, c.slug, c.epoch) for c in channels],
        positions=positions,
        resets={},
        allow_origin=allow_origin,
        expires_at=None,
        attachments=[attachment for _receiver, attachment in responses if attachment is not None],  # type: ignore[misc]
        titles={c.slug: c.display_title for c in channels},
        history=False,
    )


# Why: every reader the directory admits to a channel would get its own equal copy,
# one more object per open and per idle stream for the collector to walk (issue 16);
# StreamChannel is frozen, so its readers can share one. Bounded: a changed epoch or
# slug makes a new entry and the old one ages out.
@functools.lru_cache(maxsize=4096)
def shared_stream_channel(channel_id: int, slug: str, epoch: str) -> StreamChannel:
    """The one ``StreamChannel`` of this channel, as the directory's readers see it."""
    return StreamChannel(id=channel_id, slug=slug, epoch=epoch)


def check_origin(request: StreamRequest, channels: list[Channel]) -> str | None:
    """The origin to allow cross-origin, None for same-origin; refuses any other.

    Exact match against every channel's allowed origins, from the Origin
    header only (never Referer); ``null`` never matches.
    """
    if request.origin is None or request.origin == request.own_origin:
        return None
    for channel in channels:
        if request.origin not in channel.allowed_origins:
            raise PermissionDenied(
                f"The channel {channel.slug!r} does not allow pages from {request.origin[:100]} to subscribe."
            )
    return request.origin


def authorize_origin(request: StreamRequest) -> str | None:
    """For a preflight: are the channels there and is the origin allowed? (No credentials.)"""
    return check_origin(request, active_channels(request.slugs))
