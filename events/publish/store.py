"""Publishing: validate, store (durably, with the next sequence number), then fan out.

The fan-out sends the encoded frame once to the channel's group, in the
background, after the publish has been answered (events/publish/fanout.py); in
each server process one relay (events/deliver/relay.py) is the group's member
and hands the bytes to its local connections.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from events import metrics
from events.access.auth import KEY_ALLOWS_CHANNEL_SQL, key_allows_channel_params, key_id_allows
from events.conf import conf
from events.exceptions import ChannelNotFound
from events.models import RESERVED_EVENT_PREFIX, Channel, Message
from events.publish import fanout, idempotency, writers
from events.publish.validate import validate_event_type, validate_payload
from events.wire import frames

logger = logging.getLogger(__name__)

FRAME_MESSAGE_TYPE = "pushsite.frame"


def group_name(channel_id: int) -> str:
    return f"pushsite.channel.{channel_id}"


def store_message(
    channel: Channel | str,
    data: Any,
    *,
    event: str = "message",
    publisher: str = "",
    key_id: int | None = None,
) -> Message:
    """Store a message with its channel's next sequence number. Validates first.

    With ``key_id``, that API key must still be active and allowed on the
    channel: checked in the statement that takes the sequence number, so a key
    revoked or narrowed a moment ago stores nothing (ChannelNotFound; the caller
    finds out which rule refused it, events/publish/api.py).
    """
    validate_event_type(event)
    validate_payload(data)
    return _store(channel, data, event=event, publisher=publisher, key_id=key_id)


def store_once(
    channel: Channel | str,
    data: Any,
    *,
    event: str,
    publisher: str,
    claim: idempotency.Claim | None,
    key_id: int | None = None,
) -> Message | idempotency.Replay:
    """:func:`store_message`, once per idempotency claim: a repeated key gets the first answer's Replay."""
    if claim is None:
        return store_message(channel, data, event=event, publisher=publisher, key_id=key_id)
    validate_event_type(event)
    validate_payload(data)
    return idempotency.once(
        claim,
        channel,
        idempotency.message_fingerprint(event, data),
        lambda: _store(channel, data, event=event, publisher=publisher, key_id=key_id),
        lambda message: message_json(message, message.channel.slug),
    )


def store_platform_message(channel: Channel | str, data: Any, *, event: str, publisher: str = "") -> Message:
    """Store one of the platform's own events (``pushsite.*``), which publishers may not send."""
    if not event.startswith(RESERVED_EVENT_PREFIX):
        raise ValueError(f"Platform events start with {RESERVED_EVENT_PREFIX!r}; {event!r} does not.")
    validate_payload(data)
    return _store(channel, data, event=event, publisher=publisher)


def _store(
    channel: Channel | str, data: Any, *, event: str, publisher: str, key_id: int | None = None
) -> Message:
    slug = channel.slug if isinstance(channel, Channel) else channel
    message = _new_message(slug, event, data, publisher[:200])
    with transaction.atomic():
        # The UPDATE takes the channel row's write lock (on SQLite, the database
        # write lock) and holds it to commit, so concurrent publishers get
        # sequence numbers in commit order: "resume after N" can never skip a
        # message that commits later with a lower number.
        if connection.vendor == "postgresql":
            # One statement (issue 17): the bump and the INSERT in one round trip.
            # In a transaction still, though it could commit alone: a statement that
            # opens a transaction is run again when its connection turns out dead
            # (pushsite/postgresql/base.py), an autocommit write is not.
            channel_id, sequence = _bump_and_insert(message, slug, key_id)
        else:
            channel_id, sequence = _take_next_sequence(slug, key_id)
            message.channel = Channel(pk=channel_id, slug=slug)
            message.sequence = sequence
            _insert(message)
        _prune_if_due(channel_id, sequence)
    return message


def _new_message(slug: str, event: str, data: Any, publisher: str) -> Message:
    # A partial channel instance (replaced by one with its pk once known):
    # callers read message.channel.slug without another query.
    return Message(
        channel=Channel(slug=slug),
        sequence=0,
        event=event,
        data=data,
        publisher=publisher,
        created_at=timezone.now(),
    )


def _prepared(message: Message, fields: list[Any]) -> list[Any]:
    return [field.get_db_prep_save(getattr(message, field.attname), connection) for field in fields]


def _stored(message: Message, pk: int) -> None:
    message.pk = pk
    message._state.adding = False
    message._state.db = connection.alias


def _bump_and_insert(message: Message, slug: str, key_id: int | None) -> tuple[int, int]:
    """PostgreSQL: bump the sequence and insert ``message`` in one statement; its channel id and sequence."""
    with connection.cursor() as cursor:
        if key_id is None:
            cursor.execute(_BUMP_AND_INSERT_SQL, [slug, True, *_prepared(message, _CARRIED)])
        else:
            cursor.execute(
                _BUMP_AND_INSERT_FOR_KEY_SQL,
                [slug, True, *key_allows_channel_params(key_id), *_prepared(message, _CARRIED)],
            )
        row = cursor.fetchone()
    if row is None:
        raise ChannelNotFound(f"No active channel is called {slug!r}.")
    message.channel = Channel(pk=int(row[1]), slug=slug)
    message.sequence = int(row[2])
    _stored(message, row[0])
    return message.channel_id, message.sequence


def _insert(message: Message) -> None:
    if not connection.features.can_return_columns_from_insert:
        message.save(force_insert=True)
        return
    # why: one INSERT built once, with each value prepared by its own field, instead
    # of the ORM's compiler on every publish (docs/performance.md, issue 17).
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, _prepared(message, _INSERTED))
        row = cursor.fetchone()
    assert row is not None
    _stored(message, row[0])


_INSERTED = [field for field in Message._meta.concrete_fields if not field.primary_key]
_INSERTED_COLUMNS = ", ".join(str(field.column) for field in _INSERTED)
_INSERT_SQL = (
    f"INSERT INTO {Message._meta.db_table} ({_INSERTED_COLUMNS})"
    f" VALUES ({', '.join(['%s'] * len(_INSERTED))}) RETURNING {Message._meta.pk.column}"
)
# The columns the PostgreSQL statement takes from its parameters; the channel and
# the sequence come from the bump.
_BUMPED = {"channel_id", "sequence"}
_CARRIED = [field for field in _INSERTED if field.attname not in _BUMPED]


def _bump_and_insert_sql(condition: str) -> str:
    channels = Channel._meta.db_table
    return (
        f"WITH bumped AS (UPDATE {channels} SET last_sequence = last_sequence + 1"
        f" WHERE slug = %s AND is_active = %s{condition} RETURNING id, last_sequence)"
        f" INSERT INTO {Message._meta.db_table} (channel_id, sequence, "
        f"{', '.join(str(field.column) for field in _CARRIED)})"
        f" SELECT bumped.id, bumped.last_sequence, {', '.join(['%s'] * len(_CARRIED))} FROM bumped"
        f" RETURNING {Message._meta.pk.column}, channel_id, sequence"
    )


_BUMP_AND_INSERT_SQL = _bump_and_insert_sql("")
_BUMP_AND_INSERT_FOR_KEY_SQL = _bump_and_insert_sql(f" AND {KEY_ALLOWS_CHANNEL_SQL}")


def _take_next_sequence(slug: str, key_id: int | None = None) -> tuple[int, int]:
    """Bump the active channel's ``last_sequence``: its id and the new value.

    With ``key_id``, only while that key is active and allowed on the channel.
    """
    if connection.features.can_return_columns_from_insert:
        # One UPDATE ... RETURNING (SQLite >= 3.35, PostgreSQL) instead of the
        # ORM's UPDATE then SELECT: about 0.6 ms less per publish, most of it
        # query building (docs/performance.md). The key's authority rides in the
        # same statement: no query of its own (issue 17).
        with connection.cursor() as cursor:
            if key_id is None:
                cursor.execute(_BUMP_SEQUENCE_SQL, [slug, True])
            else:
                cursor.execute(_BUMP_SEQUENCE_FOR_KEY_SQL, [slug, True, *key_allows_channel_params(key_id)])
            row = cursor.fetchone()
    else:
        if key_id is None:
            bumped = Channel.objects.active().filter(slug=slug).update(last_sequence=F("last_sequence") + 1)
        else:
            channel = Channel.objects.active().filter(slug=slug).first()
            allowed = channel is not None and key_id_allows(key_id, channel)
            bumped = (
                Channel.objects.filter(slug=slug).update(last_sequence=F("last_sequence") + 1)
                if allowed
                else 0
            )
        row = Channel.objects.filter(slug=slug).values_list("pk", "last_sequence").first() if bumped else None
    if row is None:
        raise ChannelNotFound(f"No active channel is called {slug!r}.")
    return int(row[0]), int(row[1])


# The table names come from the models; the slug and key id are query parameters.
_BUMP_SEQUENCE_SQL = (
    f"UPDATE {Channel._meta.db_table} SET last_sequence = last_sequence + 1"
    " WHERE slug = %s AND is_active = %s RETURNING id, last_sequence"
)
_BUMP_SEQUENCE_FOR_KEY_SQL = (
    f"UPDATE {Channel._meta.db_table} SET last_sequence = last_sequence + 1"
    f" WHERE slug = %s AND is_active = %s AND {KEY_ALLOWS_CHANNEL_SQL} RETURNING id, last_sequence"
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
    """Sync twin of :func:`fan_out`: under a server, queued on its loop (returns at once);
    with no server loop (management commands), sent now, waiting at most LAYER_TIMEOUT_SECONDS."""
    group, frame = group_name(message.channel_id), frame_message(message, message.channel.slug)
    if fanout.submit_from_thread(group, frame):
        return
    if not async_to_sync(fanout.send_now)(group, frame):
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
    """Sync twin of :func:`fan_out_ephemeral`: queued on a server's loop, else sent at once."""
    group, frame = group_name(channel.pk), ephemeral_message(channel, data, event=event)
    if fanout.submit_from_thread(group, frame):
        return
    if not async_to_sync(fanout.send_now)(group, frame):
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
    key_id: int | None = None,
) -> Message:
    """Async twin of :func:`publish`: stores in a publish thread, then hands it to the fan-out.

    With ``key_id`` (a streamed publish's API key), only while that key may still
    publish to the channel, checked as :func:`store_message` checks it.
    """
    started = time.perf_counter()
    claim = idempotency.claim(idempotency_key, idempotency.code_scope(publisher))
    # A publish thread keeps its connection between calls (events/publish/writers.py):
    # a streamed publish stores one part after another (issue 17).
    message: Message | idempotency.Replay = await writers.run(
        functools.partial(
            store_once, channel, data, event=event, publisher=publisher, claim=claim, key_id=key_id
        )
    )
    if isinstance(message, idempotency.Replay):
        original: Message = await writers.run(functools.partial(idempotency.original_message, message))
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
