"""Stored messages as SSE frames: the JSON envelope, encoded once per message."""

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


def dumps(value: Any) -> str:
    # Compact, and json.dumps escapes every control character, so the result is
    # always a single line (the encoder would split it safely anyway).
    # allow_nan=False: NaN and Infinity are not JSON; publish() refuses them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def message_fields(*, slug: str, sequence: int, event: str, data: Any, published_at: datetime) -> bytes:
    """The ``event:``/``data:`` part of a message's frame, without its id line."""
    payload = envelope(slug=slug, sequence=sequence, event=event, data=data, published_at=published_at)
    return sse.encode_fields(dumps(payload), event=event)


def ephemeral_fields(*, slug: str, event: str, data: Any, published_at: datetime) -> bytes:
    """A frame that is never stored: the envelope without an ``id``."""
    payload = {"channel": slug, "event": event, "data": data, "published_at": isoformat_utc(published_at)}
    return sse.encode_fields(dumps(payload), event=event)


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
    return sse.encode_fields(dumps(payload), event=RESET_EVENT)


def open_fields(slugs: list[str], titles: dict[str, str] | None = None, *, history: bool = False) -> bytes:
    """The first event of every stream, once it is subscribed.

    It carries the stream's id, so a client that reconnects (or a page that
    reloads) before any message has a position to resume from, and each
    channel's title, so a widget can head itself without being told;
    ``history`` says stored messages follow (a resume or a rewind), so a page
    need not say "nothing yet" before they arrive.
    """
    payload: dict[str, Any] = {"event": OPEN_EVENT, "channels": slugs}
    if titles is not None:
        payload["titles"] = titles
        payload["history"] = history
    return sse.encode_fields(dumps(payload), event=OPEN_EVENT)


def close_fields(reason: str) -> bytes:
    """Sent, without an id, when the server ends a stream: why (token expired, shutdown...)."""
    return sse.encode_fields(dumps({"event": CLOSE_EVENT, "reason": reason}), event=CLOSE_EVENT)
