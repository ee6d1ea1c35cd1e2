"""Pushsite's own settings, read lazily so that ``override_settings`` works.

Each setting can be overridden in ``settings.PUSHSITE`` (a dict) or through the
environment as ``PUSHSITE_<NAME>``; values given as text are converted to the
type of the default here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    # Seconds of silence after which a stream gets a ": keep-alive" comment.
    "HEARTBEAT_SECONDS": 15.0,
    # The "retry:" hint sent first on every stream: how long browsers wait
    # before reconnecting.
    "RETRY_MILLISECONDS": 2000,
    # Largest publish request body (and encoded payload), in bytes.
    "MAX_MESSAGE_BYTES": 64 * 1024,
    # Unsent bytes a connection may queue before it is disconnected as a slow
    # reader (it resumes later with Last-Event-ID).
    "MAX_BACKLOG_BYTES": 1024 * 1024,
    # A single write that has not completed after this long evicts the reader.
    "SEND_TIMEOUT_SECONDS": 10.0,
    # Channels one stream may carry (?channel=a&channel=b...).
    "MAX_CHANNELS_PER_STREAM": 10,
    # Publishes each API key (and each staff user) may make per window (429
    # with Retry-After past it; other keys are unaffected).
    "PUBLISH_RATE_MESSAGES": 1000,
    "PUBLISH_RATE_SECONDS": 10.0,
    # Open streams one client IP address may hold on one server process
    # (429 above); offices behind one NAT address share it.
    "MAX_STREAMS_PER_IP": 200,
    # Longest accepted Last-Event-ID / lastEventId, in characters.
    "MAX_CURSOR_LENGTH": 1024,
    # Longest wait for the channel layer when publishing or opening a stream;
    # past it a publish still succeeds (relays replay it from the database)
    # and a new stream gets 503.
    "LAYER_TIMEOUT_SECONDS": 2.0,
    # How often each server process compares its channels' last sequence with
    # the database, to notice a message the channel layer dropped.
    "RELAY_POLL_SECONDS": 2.0,
    # How often open streams on non-public channels have their reader's access
    # re-checked (logout, deactivation, membership, key revocation): the
    # longest a revoked reader keeps receiving.
    "REVOCATION_SECONDS": 10.0,
    # An empty channel feed stays subscribed to its group this long, so that
    # reconnect churn does not become group_add / group_discard churn.
    "FEED_LINGER_SECONDS": 30.0,
    # Most stored messages a new stream may ask to receive first (?rewind=N,
    # per channel); a larger N is refused with 400.
    "MAX_REWIND": 100,
    # Messages read from the database per query when replaying history.
    "REPLAY_BATCH_SIZE": 500,
    # Default and largest lifetime of a subscribe token, in seconds.
    "TOKEN_MAX_AGE_SECONDS": 3600,
    # Default number of messages a new channel keeps.
    "DEFAULT_RETENTION_COUNT": 1000,
    # Publishing prunes old history every this many messages per channel.
    "PRUNE_EVERY": 100,
    # A streamed publish (POST .../stream) that sends no byte for this long is
    # ended as failed (408).
    "STREAM_IDLE_SECONDS": 30.0,
    # Most parts, and most bytes of part data in all, one streamed publish may
    # carry (413 above; each line is also limited to MAX_MESSAGE_BYTES).
    "STREAM_MAX_PARTS": 10000,
    "STREAM_MAX_BYTES": 4 * 1024 * 1024,
    # History API page size: default and maximum.
    "HISTORY_DEFAULT_LIMIT": 100,
    "HISTORY_MAX_LIMIT": 1000,
    # Chat rooms: longest message in characters (a room may set its own).
    "CHAT_MAX_LENGTH": 500,
    # Chat rooms: messages one participant may post per window, and the window.
    "CHAT_RATE_MESSAGES": 5,
    "CHAT_RATE_SECONDS": 10.0,
    # Chat rooms: messages one client IP address may post per window (people
    # behind one NAT share it, so it is higher).
    "CHAT_IP_RATE_MESSAGES": 30,
    # Messages a room page renders before it goes live.
    "CHAT_HISTORY": 50,
    # How often each process marks its chat streams as present; a row not
    # refreshed for three intervals (its process died) is dropped.
    "PRESENCE_REFRESH_SECONDS": 5.0,
}


class PushsiteSettings:
    """Attribute access to Pushsite settings with defaults, read on each access."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        overrides: dict[str, Any] = getattr(settings, "PUSHSITE", {}) or {}
        default = DEFAULTS[name]
        if name not in overrides:
            return default
        value = overrides[name]
        if isinstance(value, str) and not isinstance(default, str):
            try:
                return type(default)(value)
            except ValueError as exc:
                raise ImproperlyConfigured(
                    f"PUSHSITE_{name} must be a {type(default).__name__}, not {value!r}."
                ) from exc
        return value


conf = PushsiteSettings()
