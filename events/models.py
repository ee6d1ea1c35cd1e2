"""The core's data: channels, their stored messages, publish receipts, and the API keys that may publish to them."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from psycopg.types.json import Json, Jsonb

from events.conf import conf

EVENT_TYPE_PATTERN = r"[A-Za-z0-9_.:-]{1,64}"
RESERVED_EVENT_PREFIX = "pushsite."


def default_retention_count() -> int:
    return conf.DEFAULT_RETENTION_COUNT


def new_epoch() -> str:
    """A fresh channel epoch: 8 hex digits, different for each incarnation of a channel."""
    return secrets.token_hex(4)


class PublishedJSONField(models.JSONField):
    """JSON kept as it was written: PostgreSQL's ``json`` type there, not ``jsonb``.

    ``jsonb`` normalises what it stores: object keys re-ordered (shortest first),
    ``-0.0`` kept as ``0`` and ``1e300`` as a 301-digit integer. A message replayed or
    read from history on PostgreSQL then differed from the same message live, or on
    SQLite, which keeps the text (docs/contract.md: the payload sits unchanged under
    ``data``). Nothing queries inside these values, so ``jsonb``'s operators and
    indexes are not missed; ``json`` also stores without converting. SQLite: Django's
    own JSON column, unchanged. Values are read as text and parsed by Django, as for
    ``jsonb`` (pushsite/postgresql/base.py registers the loader).
    """

    def db_type(self, connection: Any) -> str | None:
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        adapted = super().get_db_prep_value(value, connection, prepared)
        if connection.vendor == "postgresql" and isinstance(adapted, Jsonb):
            # Sent as json, so PostgreSQL never parses it into jsonb on the way in.
            return Json(adapted.obj, dumps=adapted.dumps)
        return adapted


# An origin exactly as a browser serialises it in the Origin header: lower-case
# scheme and host (internationalised names in their xn-- form), a port only when
# it is not the scheme's default. Nothing else can reach a CORS header or the
# embed page's frame-ancestors (issue 13): no spaces, no ";", no wildcard.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_ORIGIN = re.compile(rf"(https?)://({_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::([0-9]{{1,5}}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_origin(value: object) -> bool:
    """True for exactly ``scheme://host[:port]`` as browsers send it (see validate_origin)."""
    if not isinstance(value, str):
        return False
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return False
    scheme, host, port = match.groups()
    if len(host) > 253:
        return False
    if host.startswith("["):
        try:
            canonical = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            return False
        if canonical != host[1:-1]:
            return False
    return port is None or (0 < int(port) <= 65535 and int(port) != _DEFAULT_PORTS[scheme] and port[0] != "0")


def validate_origin(value: str) -> None:
    """An allowed origin is exactly scheme://host[:port], as browsers send it."""
    if not is_origin(value):
        raise ValidationError(
            "%(value)s is not an origin: write scheme and host only, in lower case, "
            "like https://partner.example or http://localhost:8080 (no path, no trailing slash, "
            "no wildcard, no default port; an internationalised name in its xn-- form).",
            params={"value": value},
        )


def validate_origin_list(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Allowed origins must be a list of origins.")
    for origin in value:
        validate_origin(origin)


def validate_web_link(value: str) -> None:
    """A link people may follow: http or https only (never javascript: or data:)."""
    if urlsplit(value).scheme not in {"http", "https"}:
        raise ValidationError("A link must start with http:// or https://.")


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public: anyone may subscribe"
    AUTHENTICATED = "authenticated", "Authenticated: logged-in users or a token"
    PRIVATE = "private", "Private: members, staff, or a signed token"


class StreamStorage(models.TextChoices):
    # keep is the default: every part is a stored message with its own id, so
    # a late joiner or a reconnecting client replays a stream like any other
    # history (guarantee 2). fold trades that for a history of one row per stream.
    KEEP = "keep", "Keep every part: late joiners replay them"
    FOLD = "fold", "Fold: parts are live-only; the whole stream is stored as its end event"


class Kind(models.TextChoices):
    FEED = "feed", "Feed: published by keys and staff"
    CHAT = "chat", "Chat room: people post from the room page"


class ChannelQuerySet(models.QuerySet["Channel"]):
    def active(self) -> ChannelQuerySet:
        return self.filter(is_active=True)


class Channel(models.Model):
    """A named stream of messages that browsers subscribe to."""

    slug = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="pushsite_channels",
        help_text="Users who may read a private channel with their session.",
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_origin_list],
        help_text="Other sites (scheme://host[:port]) whose pages may subscribe cross-origin.",
    )
    retention_count = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=default_retention_count,
        help_text="Keep at least this many recent messages for replay; empty keeps all.",
    )
    retention_age = models.DurationField(
        null=True,
        blank=True,
        help_text="Drop messages older than this (e.g. 7 00:00:00 for a week); empty keeps them.",
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive channels refuse subscribers and publishers."
    )
    stream_storage = models.CharField(
        max_length=8,
        choices=StreamStorage.choices,
        default=StreamStorage.KEEP,
        help_text="How the parts of streamed publishes (POST .../stream, manage.py pipe) are kept.",
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.FEED)
    guests_may_post = models.BooleanField(
        default=False, help_text="Chat rooms: visitors who are not logged in may post with a nickname."
    )
    chat_max_length = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Chat rooms: longest message in characters; empty uses PUSHSITE_CHAT_MAX_LENGTH.",
    )
    # Last sequence number handed out; bumped inside the publishing transaction,
    # which holds this row's write lock until commit, so sequence order is
    # commit order (see events/publish/store.py).
    last_sequence = models.BigIntegerField(default=0, editable=False)
    # Part of every stream id (events/wire/cursors.py): a resume point from
    # another incarnation of this slug (deleted and re-created, another
    # database) names another epoch and gets an explicit reset.
    epoch = models.CharField(max_length=16, default=new_epoch, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title or self.slug

    @property
    def display_title(self) -> str:
        return self.title or self.slug

    @property
    def is_chat(self) -> bool:
        return self.kind == Kind.CHAT

    def retention_cutoff(self) -> datetime | None:
        if self.retention_age is None:
            return None
        return timezone.now() - self.retention_age


class Message(models.Model):
    """One published event, stored before it is sent."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="messages")
    sequence = models.BigIntegerField(help_text="Position in the channel; the event id.")
    event = models.CharField(
        max_length=64,
        default="message",
        validators=[RegexValidator(f"^{EVENT_TYPE_PATTERN}\\Z")],
    )
    data = PublishedJSONField(null=True)
    publisher = models.CharField(
        max_length=200, blank=True, help_text="Who published it: an API key, a user, a command."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Delivery report, added up from every server process a few seconds after
    # the fact (events/ops/census.py): streams that got it live, and from history.
    delivered_live = models.PositiveIntegerField(default=0, editable=False)
    delivered_replay = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["channel", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "sequence"], name="unique_channel_sequence")
        ]

    def __str__(self) -> str:
        return f"{self.channel_id}#{self.sequence} {self.event}"


class PublishReceipt(models.Model):
    """What a publish with an ``Idempotency-Key`` answered, so that a retry gets that answer (issue 15).

    Written in the publishing transaction (events/publish/idempotency.py); the unique
    constraint makes two racing retries store one message between them.
    """

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="+")
    # Whose key it is: "key:<api key prefix>", "user:<pk>" or "code:<publisher>"
    # (the Python API), so publishers never see or collide with each other's keys.
    scope = models.CharField(max_length=210)
    key = models.CharField(max_length=255)
    # sha256 of what was asked (the message's event and data, or a stream's
    # content type and body bytes); empty while a stream runs.
    fingerprint = models.CharField(max_length=64, blank=True)
    # The first answer: its status and JSON body (kept here, not read back from
    # the message, which retention may prune within the window). Null while a stream runs.
    status = models.PositiveSmallIntegerField(null=True)
    response = PublishedJSONField(null=True)
    # Plain ids, not foreign keys: pruning history never has to touch receipts.
    message_id = models.BigIntegerField(null=True)
    body_bytes = models.BigIntegerField(null=True)
    # A running stream's lease: past it, the stream's process is presumed dead
    # and a retry may take the key over.
    running_until = models.DateTimeField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "scope", "key"], name="unique_publish_receipt")
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key!r} on {self.channel_id}"


KEY_PREFIX_LENGTH = 8


def hash_secret(secret: str) -> str:
    # API key secrets are 256 random bits, so a fast hash is enough (nothing to
    # brute-force) and keeps each publish cheap; a password hash would add
    # hundreds of milliseconds per request.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(is_active=True)


class ApiKey(models.Model):
    """A publisher's credential. Only a hash of the secret is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=16, unique=True, editable=False, help_text="Public start of the key."
    )
    secret_hash = models.CharField(max_length=64, editable=False)
    # Explicit, never what an empty list means: removing the last channel (or
    # deleting it) leaves a key that may use nothing (issue 13).
    all_channels = models.BooleanField(
        default=False,
        help_text="May use every channel, including channels created later; the list below is then ignored.",
    )
    channels = models.ManyToManyField(
        Channel,
        blank=True,
        related_name="api_keys",
        help_text="Channels this key may use when it is not for all channels; none selected means none.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def generate(cls, name: str) -> tuple[ApiKey, str]:
        """A new unsaved key and its secret, which is shown once and never stored."""
        prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
        secret = f"psk_{prefix}_{secrets.token_urlsafe(32)}"
        return cls(name=name, prefix=prefix, secret_hash=hash_secret(secret)), secret

    @staticmethod
    def prefix_of(secret: str) -> str | None:
        parts = secret.split("_")
        if len(parts) < 3 or parts[0] != "psk" or len(parts[1]) != KEY_PREFIX_LENGTH:
            return None
        return parts[1]

    def matches(self, secret: str) -> bool:
        return secrets.compare_digest(self.secret_hash, hash_secret(secret))
