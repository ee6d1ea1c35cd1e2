"""Publishing: validate, store (durably, with the next sequence number), then fan out.

The fan-out sends the encoded frame once to the channel's group, in the
background, after the publish has been answered (events/publish/fanout.py); in
each server process one relay (events/deliver/relay.py) is the group's member
and hands the bytes to its local connections.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from events import metrics
from events.conf import conf
from events.exceptions import ChannelNotFound
from events.models import RESERVED_EVENT_PREFIX, Channel, Message
from events.publish import fanout, idempotency
from events.publish.validate import validate_event_type, validate_payload
from events.wire import frames

logger = logging.getLogger(__name__)

FRAME_MESSAGE_TYPE = "pushsite.frame"


def group_name(channel_id: int) -> str:
    return f"pushsite.channel.{channel_id}"


def store_message(
    channel: Channel | str, data: Any, *, event: str = "message", publisher: str = ""
) -> Message:
    """Store a message with its channel's next sequence number. Validates first."""
    validate_event_type(event)
    validate_payload(data)
    return _store(channel, data, event=event, publisher=publisher)


def store_once(
    channel: Channel | str, data: Any, *, event: str, publisher: str, claim: idempotency.Claim | None
) -> Message | idempotency.Replay:
    """:func:`store_message`, once per idempotency claim: a repeated key gets the first answer's Replay."""
    if claim is None:
        return store_message(channel, data, event=event, publisher=publisher)
    validate_event_type(event)
    validate_payload(data)
    return idempotency.once(
        claim,
        channel,
        idempotency.message_fingerprint(event, data),
        lambda: _store(channel, data, event=event, publisher=publisher),
        lambda message: message_json(message, message.channel.slug),
    )


def store_platform_message(channel: Channel | str, data: Any, *, event: str, publisher: str = "") -> Message:
    """Store one of the platform's own events (``pushsite.*``), which publishers may not send."""
    if not event.startswith(RESERVED_EVENT_PREFIX):
        raise ValueError(f"Platform events start with {RESERVED_EVENT_PREFIX!r}; {event!r} does not.")
    validate_payload(data)
    return _store(channel, data, event=event, publisher=publisher)


def _store(channel: Channel | str, data: Any, *, event: str, publisher: str) -> Message:
    slug = channel.slug if isinstance(channel, Channel) else channel
    with transaction.atomic():
        # The UPDATE takes the channel row's write lock (on SQLite, the database
        # write lock) and holds it to commit, so concurrent publishers get
        # sequence numbers in commit order: "resume after N" can never skip a
        # message that commits later with a lower number.
        channel_id, sequence = _take_next_sequence(slug)
        message = Message.objects.create(
            # A partial instance: it lets callers read message.channel.slug
            # without another query.
            channel=Channel(pk=channel_id, slug=slug),
            sequence=sequence,
            event=event,
            data=data,
            publisher=publisher[:200],
        )
        _prune_if_due(channel_id, sequence)
    return message


def _take_next_sequence(slug: str) -> tuple[int, int]:
    """Bump the active channel's ``last_sequence``: its id and the new value."""
    if connection.features.can_return_columns_from_insert:
        # One UPDATE ... RETURNING (SQLite >= 3.35, PostgreSQL) instead of the
        # ORM's UPDATE then SELECT: about 0.6 ms less per publish, most of it
        # query building (docs/performance.md).
        with connection.cursor() as cursor:
            cursor.execute(_BUMP_SEQUENCE_SQL, [slug, True])
            row = cursor.fetchone()
    else:
        bumped = Channel.objects.active().filter(slug=slug).update(last_sequence=F("last_sequence") + 1)
        row = Channel.objects.filter(slug=slug).values_list("pk", "last_sequence").first() if bumped else None
    if row is None:
        raise ChannelNotFound(f"No active channel is called {slug!r}.")
    return int(row[0]), int(row[1])


# The table name comes from the model; the slug is a query parameter.
_BUMP_SEQUENCE_SQL = (
    f"UPDATE {Channel._meta.db_table} SET last_sequence = last_sequence + 1"
    " WHERE slug = %s AND is_active = %s RETURNING id, last_sequence"
)


def _prune_if_due(channel_id: int, sequence: int) -> None:
    # Amortised: pruning runs on every PRUNE_EVERY-th message of a channel, so
    # a channel may hold up to PRUNE_EVERY messages more than its retention.
    if sequence % conf.PRUNE_EVERY != 0:
        return
    retention_count, retention_age = Channel.objects.filter(pk=channel_id).values_list(
        "retention_count", "retention_age"
    )[0]
    history = Message.objects.filter(channel_id=channel_id)
    if retention_count is not None:
        history.filter(sequence__lte=sequence - retention_count).delete()
    if retention_age is not None:
        history.filter(created_at__lt=timezone.now() - retention_age).delete()


def frame_message(message: Message, slug: str) -> dict[str, Any]:
    """The channel-layer message carrying ``message``'s encoded frame to the relays."""
    return {
        "type": FRAME_MESSAGE_TYPE,
        "channel_id": message.channel_id,
        "sequence": message.sequence,
        "fields": message_fields(message, slug),
        "published": message.created_at.timestamp(),
    }


def message_fields(message: Message, slug: str) -> bytes:
    return frames.message_fields(
        slug=slug,
        sequence=message.sequence,
        event=message.event,
        data=message.data,
        published_at=message.created_at,
    )


async def fan_out(message: Message) -> None:
    """Hand a stored message to this process's background fan-out; returns at once.

    The frame goes to every server process subscribed to the channel after the
    publish has been answered (events/publish/fanout.py). Async for its callers'
    sake: it never waits, on the layer or anything else.
    """
    fanout.submit(group_name(message.channel_id), frame_message(message, message.channel.slug))


def fan_out_now(message: Message) -> None:
    """Sync twin of :func:`fan_out` for code with no event loop of its own (management commands):
    sends at once, waiting at most LAYER_TIMEOUT_SECONDS."""
    if not async_to_sync(fanout.send_now)(
        group_name(message.channel_id), frame_message(message, message.channel.slug)
    ):
        # The message is stored; every relay compares its position with the
        # database every RELAY_POLL_SECONDS and fills the gap from there.
        logger.error(
            "Fan-out of %s#%s failed; relays will replay it from the database.",
            message.channel.slug,
            message.sequence,
        )


def ephemeral_message(channel: Channel, data: Any, *, event: str = "message") -> dict[str, Any]:
    """The layer message of a live-only event (validated): no sequence, never stored."""
    validate_event_type(event)
    validate_payload(data)
    return {
        "type": FRAME_MESSAGE_TYPE,
        "channel_id": channel.pk,
        # No sequence: relays hand it on at once, outside the gap-free order.
        "sequence": None,
        "fields": frames.ephemeral_fields(
            slug=channel.slug, event=event, data=data, published_at=timezone.now()
        ),
        "published": time.time(),
    }


async def fan_out_ephemeral(channel: Channel, data: Any, *, event: str = "message") -> None:
    """Send an event to the channel's live subscribers only: never stored, no id, no replay.

    For transient state ("is typing", the parts of a folded stream). Subscribers'
    positions and Last-Event-ID are unaffected; a client that is away misses it.
    It goes through the same background queue as stored messages, so it keeps
    its place among them; when the layer fails it is lost (nothing to replay it from).
    """
    fanout.submit(group_name(channel.pk), ephemeral_message(channel, data, event=event))


def fan_out_ephemeral_now(channel: Channel, data: Any, *, event: str = "message") -> None:
    """Sync twin of :func:`fan_out_ephemeral` (management commands), sent at once."""
    if not async_to_sync(fanout.send_now)(
        group_name(channel.pk), ephemeral_message(channel, data, event=event)
    ):
        logger.warning("Live-only event on %s was not sent: the channel layer failed.", channel.slug)


def publish(
    channel: Channel | str,
    data: Any,
    event: str = "message",
    *,
    publisher: str = "",
    idempotency_key: str | None = None,
) -> Message:
    """Store a message and fan it out once the surrounding transaction commits.

    With ``idempotency_key``, a call repeated with the same key, ``publisher`` and
    channel within ``PUSHSITE_IDEMPOTENCY_SECONDS`` returns the first call's message
    and stores nothing (events/publish/idempotency.py).
    """
    started = time.perf_counter()
    claim = idempotency.claim(idempotency_key, idempotency.code_scope(publisher))
    message = store_once(channel, data, event=event, publisher=publisher, claim=claim)
    if isinstance(message, idempotency.Replay):
        return idempotency.original_message(message)
    transaction.on_commit(lambda: fan_out_now(message))
    record_published(message, started)
    return message


async def apublish(
    channel: Channel | str,
    data: Any,
    event: str = "message",
    *,
    publisher: str = "",
    idempotency_key: str | None = None,
) -> Message:
    """Async twin of :func:`publish`: stores in a worker thread, then hands it to the fan-out."""
    started = time.perf_counter()
    claim = idempotency.claim(idempotency_key, idempotency.code_scope(publisher))
    message: Message | idempotency.Replay = await database_sync_to_async(store_once)(
        channel, data, event=event, publisher=publisher, claim=claim
    )
    if isinstance(message, idempotency.Replay):
        original: Message = await database_sync_to_async(idempotency.original_message)(message)
        return original
    await fan_out(message)
    record_published(message, started)
    return message


def record_published(message: Message, started: float) -> None:
    """Metrics and the audit line for a published message."""
    metrics.record_publish(message, time.perf_counter() - started)
    logger.info(
        "Published %s#%s event=%s by %s",
        message.channel.slug,
        message.sequence,
        message.event,
        message.publisher or "-",
    )


def message_json(message: Message, slug: str) -> dict[str, Any]:
    """A stored message as the JSON API shows it (the same envelope subscribers get)."""
    return frames.envelope(
        slug=slug,
        sequence=message.sequence,
        event=message.event,
        data=message.data,
        published_at=message.created_at,
    )
