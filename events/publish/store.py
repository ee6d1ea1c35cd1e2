"""Publishing: validate, store (durably, with the next sequence number), then fan out.

The fan-out sends the encoded frame once to the channel's group, in the
background, after the publish has been answered (events/publish/fanout.py); in
each server process one relay (events/deliver/relay.py) is the group's member
and hands the bytes to its local connections.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    connections,
    models,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from events import metrics
from events.access.auth import KEY_ALLOWS_CHANNEL_SQL, key_allows_channel_params, key_id_allows
from events.conf import conf
from events.exceptions import ChannelNotFound, PushsiteError
from events.models import RESERVED_EVENT_PREFIX, Channel, Message, PublishReceipt
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
        functools.partial(check_replay, key_id=key_id),
    )


def check_replay(receipt: PublishReceipt, *, key_id: int | None) -> None:
    """Refuse to replay ``receipt`` where storing would be refused now: ChannelNotFound, as the storing statement says.

    The statement that takes a sequence number checks that the channel is active and,
    with ``key_id``, that the key is active and allowed on it (so a remembered key is
    refused at once when revoked). A replay takes no number: it is checked here, and
    the key's caller runs the full check on a refusal to say why (401, 403, 404).
    """
    channel = Channel.objects.get(pk=receipt.channel_id)  # a receipt goes with its channel (CASCADE)
    if not channel.is_active or (key_id is not None and not key_id_allows(key_id, channel)):
        raise ChannelNotFound(f"No active channel is called {channel.slug!r}.")


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


def _prepared(instance: models.Model, fields: list[Any]) -> list[Any]:
    return _prepared_rows([instance], fields)


def _prepared_rows(instances: list[Any], fields: list[Any]) -> list[Any]:
    """Every row's values (``get_db_prep_save``), one after another: a batch's INSERT parameters.

    On the connection itself, not django.db.connection: every attribute read through
    that proxy is a context-local lookup (≈ 8 µs), and each field reads several.
    Why: preparing each value through the ``connection`` proxy (a thread-local look-up
    per value) and preparing the batch's shared ``created_at`` and publisher again for
    each row were most of the CPU of storing a streamed part (issue 17). A value that
    is the very object the row before held is prepared once.
    """
    wrapper = connections[DEFAULT_DB_ALIAS]
    values: list[Any] = []
    last: list[tuple[Any, Any]] = [(_UNSET, None)] * len(fields)
    for instance in instances:
        for index, field in enumerate(fields):
            value = getattr(instance, field.attname)
            seen, prepared = last[index]
            if seen is not value:
                prepared = field.get_db_prep_save(value, wrapper)
                last[index] = (value, prepared)
            values.append(prepared)
    return values


_UNSET = object()


def _stored(message: Message, pk: int) -> None:
    message.pk = pk
    message._state.adding = False
    message._state.db = DEFAULT_DB_ALIAS


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


def _prune_due(first: int, last: int) -> bool:
    """Whether storing sequences ``first`` to ``last`` passes a multiple of ``PRUNE_EVERY``.

    Amortised: pruning runs once per PRUNE_EVERY messages of a channel, so a
    channel may hold up to PRUNE_EVERY messages more than its retention.
    """
    return last // conf.PRUNE_EVERY != (first - 1) // conf.PRUNE_EVERY


def _prune_if_due(channel_id: int, sequence: int) -> None:
    if _prune_due(sequence, sequence):
        _prune(channel_id, sequence)


def _prune(channel_id: int, sequence: int) -> None:
    retention_count, retention_age = Channel.objects.filter(pk=channel_id).values_list(
        "retention_count", "retention_age"
    )[0]
    history = Message.objects.filter(channel_id=channel_id)
    if retention_count is not None:
        _delete_unlocked(history.filter(sequence__lte=sequence - retention_count))
    if retention_age is not None:
        _delete_unlocked(history.filter(created_at__lt=timezone.now() - retention_age))


def _delete_unlocked(rows: models.QuerySet[Message]) -> None:
    """Delete ``rows``, passing over any another transaction holds (PostgreSQL: SKIP LOCKED).

    Two processes' publish transactions pruning one channel met in a lock cycle on
    old rows (PostgreSQL aborted one after its 1 s deadlock timeout, holding up both
    batches). A row passed over is pruned by a later publish: retention is amortised
    anyway (``PRUNE_EVERY``).
    """
    if connection.features.has_select_for_update_skip_locked:
        rows = Message.objects.filter(pk__in=rows.select_for_update(skip_locked=True).values("pk"))
    rows.delete()


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


def fan_out_json(message: Message, payload: dict[str, Any]) -> None:
    """:func:`fan_out` of a message whose JSON (:func:`message_json`) is built already: encoded into the frame as it is."""
    fanout.submit(
        group_name(message.channel_id),
        {
            "type": FRAME_MESSAGE_TYPE,
            "channel_id": message.channel_id,
            "sequence": message.sequence,
            "fields": frames.encode(payload, event=message.event),
            "published": message.created_at.timestamp(),
        },
    )


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


async def store_grouped(publish: Publish) -> Message | idempotency.Replay:
    """Store ``publish`` in the process's group commit: answered once its batch's transaction committed.

    Raises what refused it alone (ChannelNotFound when its key may not publish
    there, IdempotencyKeyReused), or the DatabaseError of its whole batch.
    """
    return await group_commit.submit(publish)


def store_unit(publishes: list[Publish]) -> asyncio.Future[list[Message | idempotency.Replay | Exception]]:
    """Queue ``publishes`` in the process's group commit as one unit; returns at once.

    For the parts of one streamed publish: one channel, one key, no idempotency
    claim, at most ``writers.MAX_BATCH``. They go into one batch side by side, so
    they get consecutive sequences in their order and are stored in one
    transaction: their key's authority, checked in their channel's bump, takes
    all or none of them. The future: one outcome per publish, or the DatabaseError
    of the whole batch.
    """
    return group_commit.submit_unit(publishes)


async def apublish(
    channel: Channel | str,
    data: Any,
    event: str = "message",
    *,
    publisher: str = "",
    idempotency_key: str | None = None,
    key_id: int | None = None,
) -> Message:
    """Async twin of :func:`publish`: stores in the group commit, then hands it to the fan-out.

    With ``key_id`` (a streamed publish's API key), only while that key may still
    publish to the channel, checked in the statement that takes the sequence as for
    any keyed publish (ChannelNotFound otherwise).
    """
    started = time.perf_counter()
    claim = idempotency.claim(idempotency_key, idempotency.code_scope(publisher))
    # Stored with whatever else is being published at that moment (group commit,
    # issue 17); a streamed publish's parts go in units of many (store_unit).
    message = await store_grouped(
        prepared(channel, data, event=event, publisher=publisher, claim=claim, key_id=key_id)
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


# --- group commit (issue 17) ----------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    """One publish, authenticated, counted and validated: what the group commit stores."""

    slug: str
    event: str
    data: Any
    publisher: str
    # The API key whose authority is checked in the statement that takes the sequence.
    key_id: int | None = None
    claim: idempotency.Claim | None = None


def prepared(
    channel: Channel | str,
    data: Any,
    *,
    event: str,
    publisher: str,
    key_id: int | None = None,
    claim: idempotency.Claim | None = None,
) -> Publish:
    """A :class:`Publish` after the checks :func:`store_message` makes (validation)."""
    validate_event_type(event)
    validate_payload(data)
    slug = channel.slug if isinstance(channel, Channel) else channel
    return Publish(slug, event, data, publisher[:200], key_id, claim)


def store_prepared(publish: Publish) -> Message | idempotency.Replay:
    """Store ``publish`` alone, in the calling thread's transaction (:func:`store_once`)."""
    return store_once(
        publish.slug,
        publish.data,
        event=publish.event,
        publisher=publish.publisher,
        claim=publish.claim,
        key_id=publish.key_id,
    )


# What one publish of a batch came to: stored, the first answer replayed, or refused.
Outcome = Message | idempotency.Replay | PushsiteError

# A batch whose receipts met a concurrent retry's is rolled back and stored again
# (each time at least one more of its publishes turns into a replay).
RECEIPT_ATTEMPTS = 5
# Rows per INSERT (SQLite allows 999 parameters per statement).
INSERT_ROWS = 64


class _ReceiptTaken(Exception):
    """A key's receipt was committed by another transaction after the batch looked."""


def store_batch(publishes: list[Publish]) -> list[Outcome]:
    """Store ``publishes`` in one transaction, with one sequence bump per channel (group commit).

    Each publish keeps its own rules: its key's authority is checked in its
    channel's bump (a refused one stores nothing and gets ChannelNotFound, the
    others are stored), its idempotency key gets its own receipt (a key used
    twice in the batch stores once, the second gets the first's answer), and
    within a channel the sequences follow the order of ``publishes``. A
    DatabaseError (commit included) is raised for the whole batch: nothing
    of it may be reported stored, and it is never tried again here, but for
    one the database says it rolled back itself (a deadlock, a serialization
    failure: :func:`_rolled_back_by_the_database`), whose outcome is known.
    """
    if not connection.features.can_return_columns_from_insert:
        return [_store_alone(publish) for publish in publishes]
    outcomes: list[Outcome | None] = [None] * len(publishes)
    for _attempt in range(RECEIPT_ATTEMPTS):
        duplicates = _settle_receipts(publishes, outcomes)
        storing = [
            index for index, outcome in enumerate(outcomes) if outcome is None and index not in duplicates
        ]
        batch = [publishes[index] for index in storing]
        pruning: list[tuple[int, int]] = []
        try:
            # why a transaction even for the one statement of a one-key batch on PostgreSQL:
            # a statement that opens one is run again when its kept connection turns out
            # dead (pushsite/postgresql/base.py); an autocommit write is not (its outcome is
            # unknown), and killed idle backends then answered publishes 503.
            with transaction.atomic():
                stored = _store_together(batch, pruning)
        except _ReceiptTaken:
            continue  # rolled back: nothing of this attempt is stored
        except OperationalError as error:
            if not _rolled_back_by_the_database(error):
                raise
            # Two processes' batches met in a lock cycle (pruning, receipts' keys) and
            # PostgreSQL aborted this one: nothing of it is stored, so it runs again.
            logger.info(
                "Publish batch of %d rolled back by the database (%s); storing it again.", len(storing), error
            )
            continue
        for index, outcome in zip(storing, stored, strict=True):
            outcomes[index] = outcome
        for channel_id, sequence in pruning:
            _prune_after_commit(channel_id, sequence)
        for index, first in duplicates.items():
            outcomes[index] = _answer_of(outcomes[first], publishes[first], publishes[index])
        return [outcome for outcome in outcomes if outcome is not None]
    raise IntegrityError(
        "Concurrent publishes kept colliding with this batch (receipts or locks); nothing was stored."
    )


# SQLSTATEs of a transaction the database aborted itself and rolled back: its outcome is
# known (nothing stored), unlike a connection lost during COMMIT, so it may run again.
ROLLED_BACK_BY_THE_DATABASE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _prune_after_commit(channel_id: int, sequence: int) -> None:
    """Prune a channel's history once its batch has committed, in a transaction of its own.

    Not in the publish's transaction: its locks on old rows were held until
    the batch committed (two processes' batches deadlocked on them), and a
    failure here must not undo publishes already stored; a later batch prunes.
    """
    try:
        with transaction.atomic():
            _prune(channel_id, sequence)
    except DatabaseError as error:
        logger.warning("Pruning channel %s failed (a later publish prunes it): %s", channel_id, error)


def _rolled_back_by_the_database(error: OperationalError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) in ROLLED_BACK_BY_THE_DATABASE


def _store_alone(publish: Publish) -> Outcome:
    try:
        return store_prepared(publish)
    except PushsiteError as error:
        return error


def _settle_receipts(publishes: list[Publish], outcomes: list[Outcome | None]) -> dict[int, int]:
    """Answer the publishes whose key already has a receipt; pair the batch's repeated keys with their first."""
    firsts: dict[tuple[str, str, str], int] = {}
    duplicates: dict[int, int] = {}
    for index, publish in enumerate(publishes):
        claim = publish.claim
        if claim is None or outcomes[index] is not None:
            continue
        ident = (publish.slug, claim.scope, claim.key)
        if ident in firsts:
            duplicates[index] = firsts[ident]
            continue
        earlier = idempotency.receipt_for(claim, publish.slug)
        if earlier is None:
            firsts[ident] = index
            continue
        try:
            check_replay(earlier, key_id=publish.key_id)
            outcomes[index] = idempotency.replay(earlier, _fingerprint(publish))
        except PushsiteError as error:
            outcomes[index] = error
    return duplicates


def _fingerprint(publish: Publish) -> str:
    return idempotency.message_fingerprint(publish.event, publish.data)


def _answer_of(first_outcome: Outcome | None, first: Publish, publish: Publish) -> Outcome:
    """A repeated key's answer: what a retry after the first publish's commit would get."""
    assert first_outcome is not None
    if not isinstance(first_outcome, Message):
        return first_outcome  # refused: the same key on the same channel is refused again
    if _fingerprint(first) != _fingerprint(publish):
        return idempotency.reused()
    return idempotency.Replay(
        status=201,
        body=message_json(first_outcome, publish.slug),
        channel_id=first_outcome.channel_id,
        message_id=first_outcome.pk,
    )


def _store_together(publishes: list[Publish], pruning: list[tuple[int, int]]) -> list[Outcome]:
    """In the caller's transaction: one bump per channel, one INSERT of the messages, one of the receipts.

    Appends to ``pruning`` each channel (and its last sequence) due for pruning after the commit.
    """
    now = timezone.now()
    outcomes: list[Outcome] = []
    by_slug: dict[str, list[int]] = {}
    for index, publish in enumerate(publishes):
        outcomes.append(ChannelNotFound(f"No active channel is called {publish.slug!r}."))
        by_slug.setdefault(publish.slug, []).append(index)
    stored: list[tuple[Publish, Message]] = []
    inserting: list[Message] = []
    # why sorted: every batch (in any process) locks its channels' rows in one
    # order, so two batches never wait for each other in a cycle.
    for slug in sorted(by_slug):
        indexes = by_slug[slug]
        group = [publishes[index] for index in indexes]
        keys = {publish.key_id for publish in group}
        if connection.vendor == "postgresql" and len(keys) == 1:
            # One key (the usual case): the bump and the INSERT in one statement.
            taking = indexes
            messages = _bump_and_insert_all(slug, keys.pop(), group, now)
            if not messages:
                continue  # refused, or no such active channel
        else:
            bumped = _bump_for(slug, group)
            if bumped is None:
                continue  # no such active channel: every publish to it stays refused
            channel_id, last, allowed = bumped
            taking = [index for index in indexes if publishes[index].key_id in allowed]
            channel = Channel(pk=channel_id, slug=slug)
            first = last - len(taking) + 1
            messages = [
                _new_stored(publishes[index], channel, first + offset, now)
                for offset, index in enumerate(taking)
            ]
            inserting += messages
        for index, message in zip(taking, messages, strict=True):
            outcomes[index] = message
            stored.append((publishes[index], message))
        if messages and _prune_due(messages[0].sequence, messages[-1].sequence):
            pruning.append((messages[0].channel_id, messages[-1].sequence))
    _insert_all(inserting)
    _insert_receipts([(publish, message) for publish, message in stored if publish.claim is not None], now)
    return outcomes


# Message's concrete fields in the order Model.__init__ takes them positionally, with
# the defaults of those a publish does not set.
_MESSAGE_FIELDS = tuple(field.attname for field in Message._meta.concrete_fields)
_MESSAGE_DEFAULTS = {
    field.attname: field.get_default()
    for field in Message._meta.concrete_fields
    if field.attname in {"delivered_live", "delivered_replay"}
}
_MESSAGE_CHANNEL = Message._meta.get_field("channel")


def _new_stored(publish: Publish, channel: Channel, sequence: int, now: Any) -> Message:
    """A publish's unsaved Message: what ``Message(channel=..., ...)`` builds, for a fraction of its CPU.

    Positional values (Model.__init__'s short branch: no keyword look-ups, no
    defaults to find, no related-object descriptor with its router check); the
    channel is cached as assigning it would (tests/publish/test_store.py compares).
    """
    values = {
        "id": None,
        "channel_id": channel.pk,
        "sequence": sequence,
        "event": publish.event,
        "data": publish.data,
        "publisher": publish.publisher,
        "created_at": now,
        **_MESSAGE_DEFAULTS,
    }
    message = Message(*[values[name] for name in _MESSAGE_FIELDS])
    _MESSAGE_CHANNEL.set_cached_value(message, channel)
    return message


def _bump_and_insert_all(slug: str, key_id: int | None, publishes: list[Publish], now: Any) -> list[Message]:
    """PostgreSQL: the channel's bump by ``len(publishes)`` and their INSERT in one statement.

    Their messages in order, stored; none when the channel is not active or ``key_id``
    may not publish there (the statement then stores nothing).
    """
    count = len(publishes)
    params: list[Any] = [count, slug, True]
    if key_id is not None:
        params += key_allows_channel_params(key_id)
    params += [count, *_DEFAULTED_VALUES, _rows_json(publishes, now)]
    with connection.cursor() as cursor:
        cursor.execute(_bump_and_insert_all_sql(key_id is not None), params)
        rows = cursor.fetchall()
    if not rows:
        return []
    ids = {int(sequence): (pk, int(channel_id)) for pk, channel_id, sequence in rows}
    first = min(ids)
    channel = Channel(pk=ids[first][1], slug=slug)
    # Built after the statement, from its RETURNING rows (none to build when it refused).
    messages = [
        _new_stored(publish, channel, first + offset, now) for offset, publish in enumerate(publishes)
    ]
    for message in messages:
        _stored(message, ids[message.sequence][0])
    return messages


# The batch's rows go to PostgreSQL as one JSON text (json_to_recordset), not one
# array per column: psycopg's client-side array adaptation cost about 40 µs of CPU a
# row (a 64-row batch: 2.5 ms), one json.dumps of the rows about 3.5 µs
# (docs/performance.md, "One JSON parameter for a batch's rows").
_FROM_PUBLISH = ("event", "data", "publisher", "created_at")
# Carried columns a publish does not set: their field's default, the same for every row.
_DEFAULTED = [field for field in _CARRIED if field.attname not in _FROM_PUBLISH]
assert {field.attname for field in _CARRIED} == {*_FROM_PUBLISH, *(f.attname for f in _DEFAULTED)}
_DEFAULTED_VALUES = [field.get_default() for field in _DEFAULTED]


def _rows_json(publishes: list[Publish], now: Any) -> str:
    created = now.isoformat()
    # allow_nan=False: validation already refuses NaN and the infinities (JSON has none).
    return json.dumps(
        [
            {"event": p.event, "data": p.data, "publisher": p.publisher, "created_at": created}
            for p in publishes
        ],
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )


@functools.cache
def _bump_and_insert_all_sql(with_key: bool) -> str:
    condition = f" AND {KEY_ALLOWS_CHANNEL_SQL}" if with_key else ""
    fields = {field.attname: field for field in _CARRIED}
    record = ", ".join(f"{name} {fields[name].cast_db_type(connection)}" for name in _FROM_PUBLISH)
    # Django stores a top-level None as SQL NULL, not as the JSON null: so does
    # json_to_recordset ("a JSON null value is converted to an SQL null in all cases").
    # json, not jsonb: each row's data goes in as the very text json.dumps wrote for it
    # (events.models.PublishedJSONField).
    values = {name: f"v.{name}" for name in _FROM_PUBLISH}
    columns = [str(field.column) for field in _CARRIED]
    selected = [values.get(field.attname, f"%s::{field.cast_db_type(connection)}") for field in _CARRIED]
    # Every batch size has the same text: psycopg parses it once.
    return (
        f"WITH bumped AS (UPDATE {Channel._meta.db_table} SET last_sequence = last_sequence + %s"
        f" WHERE slug = %s AND is_active = %s{condition} RETURNING id, last_sequence)"
        f" INSERT INTO {Message._meta.db_table} (channel_id, sequence, {', '.join(columns)})"
        f" SELECT bumped.id, bumped.last_sequence - %s + v.position, {', '.join(selected)}"
        f" FROM bumped, ROWS FROM (json_to_recordset(%s::json) AS ({record}))"
        f" WITH ORDINALITY AS v ({', '.join(_FROM_PUBLISH)}, position)"
        f" RETURNING {Message._meta.pk.column}, channel_id, sequence"
    )


def _bump_for(slug: str, publishes: list[Publish]) -> tuple[int, int, set[int | None]] | None:
    """Bump the channel's sequence by the number of its publishes whose key may publish there.

    One statement: each key's authority is checked in it (as ``KEY_ALLOWS_CHANNEL_SQL``
    does for a single publish), and only the allowed publishes are counted. The
    channel id, its new ``last_sequence`` and the allowed key ids (None: no key to
    check); None when no active channel is called ``slug``.
    """
    counts: dict[int | None, int] = {}
    for publish in publishes:
        counts[publish.key_id] = counts.get(publish.key_id, 0) + 1
    key_ids = sorted(key_id for key_id in counts if key_id is not None)
    params: list[Any] = [counts.get(None, 0)]
    for key_id in key_ids:
        params += [*key_allows_channel_params(key_id), counts[key_id]]
    params += [slug, True]
    for key_id in key_ids:
        params += key_allows_channel_params(key_id)
    with connection.cursor() as cursor:
        cursor.execute(_bump_for_keys_sql(len(key_ids)), params)
        row = cursor.fetchone()
    if row is None:
        return None
    allowed: set[int | None] = {None}
    allowed.update(key_id for key_id, allows in zip(key_ids, row[2:], strict=True) if allows)
    return int(row[0]), int(row[1]), allowed


@functools.lru_cache(maxsize=64)
def _bump_for_keys_sql(keys: int) -> str:
    counted = "".join(f" + CASE WHEN {KEY_ALLOWS_CHANNEL_SQL} THEN %s ELSE 0 END" for _ in range(keys))
    returned = "".join(f", {KEY_ALLOWS_CHANNEL_SQL}" for _ in range(keys))
    return (
        f"UPDATE {Channel._meta.db_table} SET last_sequence = last_sequence + %s{counted}"
        f" WHERE slug = %s AND is_active = %s RETURNING id, last_sequence{returned}"
    )


def _insert_all(messages: list[Message]) -> None:
    for start in range(0, len(messages), INSERT_ROWS):
        rows = messages[start : start + INSERT_ROWS]
        with connection.cursor() as cursor:
            cursor.execute(
                _insert_rows_sql(len(rows)),
                _prepared_rows(rows, _INSERTED),
            )
            ids = {(int(channel_id), int(sequence)): pk for pk, channel_id, sequence in cursor.fetchall()}
        for message in rows:
            _stored(message, ids[(message.channel_id, message.sequence)])


@functools.lru_cache(maxsize=INSERT_ROWS)
def _insert_rows_sql(rows: int) -> str:
    values = ", ".join([f"({', '.join(['%s'] * len(_INSERTED))})"] * rows)
    return (
        f"INSERT INTO {Message._meta.db_table} ({_INSERTED_COLUMNS}) VALUES {values}"
        f" RETURNING {Message._meta.pk.column}, channel_id, sequence"
    )


def _insert_receipts(stored: list[tuple[Publish, Message]], now: Any) -> None:
    """The receipts of the batch's idempotency keys; _ReceiptTaken if another transaction has one of them."""
    for start in range(0, len(stored), INSERT_ROWS):
        receipts = [
            PublishReceipt(
                channel_id=message.channel_id,
                scope=publish.claim.scope,
                key=publish.claim.key,
                fingerprint=_fingerprint(publish),
                status=201,
                response=message_json(message, publish.slug),
                message_id=message.pk,
                created_at=now,
            )
            for publish, message in stored[start : start + INSERT_ROWS]
            if publish.claim is not None
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                _insert_receipts_sql(len(receipts)),
                _prepared_rows(receipts, _RECEIPT_FIELDS),
            )
            written = len(cursor.fetchall())
        if written != len(receipts):
            # A concurrent publish with the same key committed since _settle_receipts
            # looked (PostgreSQL waited for it): roll back, look again, store again.
            raise _ReceiptTaken


_RECEIPT_FIELDS = [field for field in PublishReceipt._meta.concrete_fields if not field.primary_key]


@functools.lru_cache(maxsize=INSERT_ROWS)
def _insert_receipts_sql(rows: int) -> str:
    values = ", ".join([f"({', '.join(['%s'] * len(_RECEIPT_FIELDS))})"] * rows)
    return (
        f"INSERT INTO {PublishReceipt._meta.db_table}"
        f" ({', '.join(str(field.column) for field in _RECEIPT_FIELDS)}) VALUES {values}"
        f" ON CONFLICT DO NOTHING RETURNING {PublishReceipt._meta.pk.column}"
    )


group_commit: writers.GroupCommit[Publish, Message | idempotency.Replay] = writers.GroupCommit(store_batch)
