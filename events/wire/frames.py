"""Pushsite's events as SSE frames: the JSON envelope, encoded once per message.

Every event Pushsite sends (stored messages, live-only events, and its own
``pushsite.open``, ``pushsite.reset`` and ``pushsite.close``) is encoded by
:func:`encode`, so all of them share one guarantee: the ``data:`` field is one
line of JSON on every client's idea of a line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from events.wire import sse

RESET_EVENT = "pushsite.reset"
OPEN_EVENT = "pushsite.open"
CLOSE_EVENT = "pushsite.close"


def isoformat_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(*, slug: str, sequence: int, event: str, data: Any, published_at: datetime) -> dict[str, Any]:
    """The JSON object a subscriber receives; the published payload sits under ``data``."""
    return {
        "id": sequence,
        "channel": slug,
        "event": event,
        "data": data,
        "published_at": isoformat_utc(published_at),
    }


# Compact, and json.dumps escapes every control character, so the result is
# always a single line (the encoder would split it safely anyway).
# allow_nan=False: NaN and Infinity are not JSON; publish() refuses them.
# Built once: json.dumps with any of these builds a new encoder on every call
# (twice per publish: its data's check and its frame). Its settings never change,
# so one serves every thread.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    return _COMPACT.encode(value)


# Line breaks that json.dumps(ensure_ascii=False) leaves raw but that clients
# splitting on every Unicode line break (str.splitlines(), requests'
# iter_lines(decode_unicode=True)) would cut a data line at (issue 13).
_UNICODE_LINE_BREAKS = ("\u2028", "\u2029", "\x85")
_ESCAPE_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def data_json(value: Any) -> str:
    """``value`` as JSON for a ``data:`` field: one line, whichever line breaks a client splits on."""
    text = dumps(value)
    if any(separator in text for separator in _UNICODE_LINE_BREAKS):
        text = text.translate(_ESCAPE_LINE_BREAKS)
    return text


def encode(payload: Any, *, event: str) -> bytes:
    """The ``event:``/``data:`` fields of one of Pushsite's events (the one frame encoder)."""
    return sse.encode_fields(data_json(payload), event=event)


def message_fields(*, slug: str, sequence: int, event: str, data: Any, published_at: datetime) -> bytes:
    """The ``event:``/``data:`` part of a message's frame, without its id line."""
    payload = envelope(slug=slug, sequence=sequence, event=event, data=data, published_at=published_at)
    return encode(payload, event=event)


def ephemeral_fields(*, slug: str, event: str, data: Any, published_at: datetime) -> bytes:
    """A frame that is never stored: the envelope without an ``id``."""
    payload = {"channel": slug, "event": event, "data": data, "published_at": isoformat_utc(published_at)}
    return encode(payload, event=event)


def reset_fields(*, slug: str, requested_after: int, resumed_after: int, reason: str) -> bytes:
    """The event that tells a client history it asked for is gone (no silent gap)."""
    payload = {
        "channel": slug,
        "event": RESET_EVENT,
        "data": {
            "reason": reason,
            "requested_after": requested_after,
            "resumed_after": resumed_after,
        },
    }
    return encode(payload, event=RESET_EVENT)


def open_frame(
    slugs: list[str],
    *,
    cursor: str,
    retry_milliseconds: int,
    titles: dict[str, str] | None = None,
    history: bool = False,
) -> bytes:
    """The first bytes of every stream: the ``retry:`` hint, the stream's id and ``pushsite.open``.

    One event block: a ``retry:`` alone would be a block without data, which
    lenient parsers (httpx-sse) yield as an empty message. The id gives a client
    that reconnects (or a page that reloads) before any message a position to
    resume from; each channel's title lets a widget head itself without being
    told, and ``history`` says stored messages follow (a resume or a rewind), so
    a page need not say "nothing yet" before they arrive.
    """
    payload: dict[str, Any] = {"event": OPEN_EVENT, "channels": slugs}
    if titles is not None:
        payload["titles"] = titles
        payload["history"] = history
    return sse.encode_retry(retry_milliseconds) + sse.encode_id(cursor) + encode(payload, event=OPEN_EVENT)


def close_fields(reason: str) -> bytes:
    """Sent, without an id, when the server ends a stream: why (token expired, shutdown...)."""
    return encode({"event": CLOSE_EVENT, "reason": reason}, event=CLOSE_EVENT)
