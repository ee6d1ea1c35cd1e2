"""``Idempotency-Key``: a publish retried with the same key gets its first answer and stores nothing (issue 15).

One rule for every way of publishing (the JSON API and its fast path, the streaming
publish, ``publish()`` / ``apublish()``): the key is 1 to 255 printable ASCII
characters (:func:`checked_key`), scoped to its publisher (an API key, a staff user,
or the Python API's ``publisher``) and channel. A :class:`~events.models.PublishReceipt`
holds the first answer for ``PUSHSITE_IDEMPOTENCY_SECONDS``; it is written in the
message's own transaction, so a unique constraint decides between racing retries
and the loser reads the winner's answer. The same key with another request is 422.

A streamed publish claims its key when it starts (:func:`claim_stream`): while it
runs a retry gets 409; once it ended ``done`` a retry gets the summary again (after
its body is read and found the same); a stream that failed releases the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.utils import timezone

from events.conf import conf
from events.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidInput
from events.models import Channel, Message, PublishReceipt
from events.runtime.bookkeeping import Job, off_path
from events.runtime.tick import Every
from events.signals import tick

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
META_NAME = "HTTP_IDEMPOTENCY_KEY"
ASGI_NAME = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")

# Expired receipts are deleted on the tick, in batches, at most this many per run.
PRUNE_SECONDS = 60.0
PRUNE_BATCH = 1000
PRUNE_BATCHES = 10


# --- the key and whose it is --------------------------------------------------------


def checked_key(value: str) -> str:
    """The key itself, or InvalidInput (400) naming the header: the one rule for every path."""
    if not _KEY.fullmatch(value):
        raise InvalidInput(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
            "(a UUID is a good key)."
        )
    return value


@dataclass(frozen=True)
class Claim:
    """An idempotency key and whose it is (``key:<prefix>``, ``user:<pk>``, ``code:<publisher>``)."""

    key: str
    scope: str


def claim(value: str | None, scope: str) -> Claim | None:
    """The request's claim, None without a key; InvalidInput for a malformed one."""
    return None if value is None else Claim(checked_key(value), scope)


def key_scope(prefix: str) -> str:
    return f"key:{prefix}"


def user_scope(pk: object) -> str:
    return f"user:{pk}"


def code_scope(publisher: str) -> str:
    return f"code:{publisher[:200]}"


def retention() -> timedelta:
    return timedelta(seconds=conf.IDEMPOTENCY_SECONDS)


# --- fingerprints: what was asked -------------------------------------------------------


def message_fingerprint(event: str, data: Any) -> str:
    """The same event and data (whatever the JSON's spacing or key order) give the same fingerprint."""
    canonical = json.dumps(["message", event, data], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class BodyDigest:
    """A streamed body's fingerprint, fed chunk by chunk: its content type and its exact bytes."""

    def __init__(self, content_type: str | None) -> None:
        self._hash = hashlib.sha256(b"stream\n%s\n" % (content_type or "").strip().lower().encode("latin-1"))
        self.bytes = 0

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.bytes += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# --- single messages --------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """The answer first given for a key: its status and body, and the message it stored."""

    status: int
    body: dict[str, Any]
    channel_id: int
    message_id: int | None


def once(
    claim: Claim,
    channel: Channel | str,
    fingerprint: str,
    store: Callable[[], Message],
    describe: Callable[[Message], dict[str, Any]],
    may_replay: Callable[[PublishReceipt], None],
) -> Message | Replay:
    """``store()`` and the key's receipt in one transaction; the first answer instead when the key was used.

    ``may_replay`` raises when the publisher may no longer publish there (a replay
    stores nothing, so nothing else would check).
    """
    earlier = receipt_for(claim, channel)
    if earlier is not None:
        may_replay(earlier)
        return replay(earlier, fingerprint)
    try:
        with transaction.atomic():
            message = store()
            PublishReceipt.objects.create(
                channel_id=message.channel_id,
                scope=claim.scope,
                key=claim.key,
                fingerprint=fingerprint,
                status=201,
                response=describe(message),
                message_id=message.pk,
            )
    except IntegrityError:
        # A concurrent retry committed first: its message stands, this one rolled back.
        earlier = receipt_for(claim, channel)
        if earlier is None:
            raise
        may_replay(earlier)
        return replay(earlier, fingerprint)
    return message


def receipt_for(claim: Claim, channel: Channel | str) -> PublishReceipt | None:
    """The key's receipt on this channel; an expired one is deleted (and None returned)."""
    receipts = PublishReceipt.objects.filter(scope=claim.scope, key=claim.key)
    if isinstance(channel, Channel):
        receipts = receipts.filter(channel_id=channel.pk)
    else:
        receipts = receipts.filter(channel__slug=channel)
    earlier = receipts.first()
    if earlier is not None and _expired(earlier, timezone.now()):
        PublishReceipt.objects.filter(pk=earlier.pk, created_at=earlier.created_at).delete()
        return None
    return earlier


def _expired(receipt: PublishReceipt, now: datetime) -> bool:
    return receipt.created_at < now - retention()


def replay(earlier: PublishReceipt, fingerprint: str) -> Replay:
    """The receipt's answer for a request with ``fingerprint``; IdempotencyKeyReused (422) for another request."""
    if earlier.status is None or earlier.response is None or earlier.fingerprint != fingerprint:
        raise reused()
    logger.info("Replayed the answer for %s %s %r.", earlier.scope, HEADER, earlier.key)
    return Replay(
        status=earlier.status,
        body=earlier.response,
        channel_id=earlier.channel_id,
        message_id=earlier.message_id,
    )


def reused() -> IdempotencyKeyReused:
    """The refusal of a key used before for another message."""
    return IdempotencyKeyReused(
        f"This {HEADER} was already used on this channel for a different request "
        "(another body, or the other publish endpoint); send a new key with a new message."
    )


def original_message(replay: Replay) -> Message:
    """The message a replayed key stored (rebuilt from its receipt if history has pruned it)."""
    if replay.message_id is not None:
        stored = Message.objects.select_related("channel").filter(pk=replay.message_id).first()
        if stored is not None:
            return stored
    body = replay.body
    return Message(
        pk=replay.message_id,
        channel=Channel(pk=replay.channel_id, slug=body["channel"]),
        sequence=body["id"],
        event=body["event"],
        data=body["data"],
        created_at=datetime.fromisoformat(body["published_at"]),
    )


# --- streams ----------------------------------------------------------------------------


def lease() -> timedelta:
    # Longer than the idle limit (a running stream renews on every chunk past
    # half of it), so only a stream whose process died lets its lease lapse.
    return timedelta(seconds=2 * conf.STREAM_IDLE_SECONDS + 5)


class StreamClaim:
    """A running stream's hold on its key: digests the body, renews the lease, settles at the end."""

    def __init__(self, receipt_id: int, content_type: str | None) -> None:
        self.receipt_id = receipt_id
        self.digest = BodyDigest(content_type)
        self._renew_at = time.monotonic() + lease().total_seconds() / 2

    def renewal_due(self) -> bool:
        return time.monotonic() >= self._renew_at

    def renew(self) -> None:
        """Extend the lease (runs in a worker thread)."""
        self._renew_at = time.monotonic() + lease().total_seconds() / 2
        PublishReceipt.objects.filter(pk=self.receipt_id, status=None).update(
            running_until=timezone.now() + lease()
        )

    def settle(self, summary: dict[str, Any] | None, end_message: Message) -> None:
        """In the end event's transaction: keep a done stream's summary, release a failed stream's key."""
        receipts = PublishReceipt.objects.filter(pk=self.receipt_id)
        if summary is None:
            receipts.delete()
            return
        receipts.update(
            status=201,
            response=summary,
            fingerprint=self.digest.hexdigest(),
            body_bytes=self.digest.bytes,
            message_id=end_message.pk,
            running_until=None,
        )


class StreamReplay:
    """A retry of a stream that ended: its body is read and compared, and nothing is published."""

    def __init__(self, receipt: PublishReceipt, content_type: str | None) -> None:
        self.receipt = receipt
        self.digest = BodyDigest(content_type)

    def feed(self, chunk: bytes) -> None:
        self.digest.feed(chunk)
        if self.digest.bytes > (self.receipt.body_bytes or 0):
            raise self._reused()  # longer than the original: no need to read the rest

    def answer(self) -> Replay:
        if self.digest.hexdigest() != self.receipt.fingerprint:
            raise self._reused()
        return replay(self.receipt, self.receipt.fingerprint)

    def _reused(self) -> IdempotencyKeyReused:
        return IdempotencyKeyReused(
            f"This {HEADER} was already used on this channel for a different request "
            "(another stream body, or the other publish endpoint); send a new key with a new stream."
        )


def claim_stream(claim: Claim, channel: Channel, content_type: str | None) -> StreamClaim | StreamReplay:
    """Claim the key for a new stream (runs in a worker thread).

    A :class:`StreamClaim` to run the stream; a :class:`StreamReplay` when the key's
    stream has ended; 409 while it runs (a lapsed lease is taken over).
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            receipt = PublishReceipt.objects.create(
                channel=channel, scope=claim.scope, key=claim.key, running_until=now + lease(), created_at=now
            )
        return StreamClaim(receipt.pk, content_type)
    except IntegrityError:
        pass
    earlier = PublishReceipt.objects.filter(channel=channel, scope=claim.scope, key=claim.key).first()
    if earlier is None:
        raise IdempotencyKeyInUse(f"This {HEADER} was being released by another request; retry.")
    running = earlier.status is None and earlier.running_until is not None and earlier.running_until >= now
    if not running and (earlier.status is None or _expired(earlier, now)):
        # The stream's process died (its lease lapsed) or the receipt expired: take it over, once.
        taken = PublishReceipt.objects.filter(
            pk=earlier.pk, created_at=earlier.created_at, running_until=earlier.running_until
        ).update(
            created_at=now,
            running_until=now + lease(),
            status=None,
            response=None,
            fingerprint="",
            body_bytes=None,
            message_id=None,
        )
        if taken:
            return StreamClaim(earlier.pk, content_type)
    elif earlier.status is not None:
        return StreamReplay(earlier, content_type)
    raise IdempotencyKeyInUse(
        f"A stream with this {HEADER} is still running; retry once it has ended to get its summary."
    )


# --- pruning ----------------------------------------------------------------------------


def prune_expired(batch: int = PRUNE_BATCH, batches: int = PRUNE_BATCHES) -> int:
    """Delete expired receipts, at most ``batch`` times ``batches`` of them; how many were deleted."""
    deleted = 0
    for _ in range(batches):
        now = timezone.now()
        ids = list(
            PublishReceipt.objects.filter(created_at__lt=now - retention())
            .exclude(running_until__gt=now)
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch]
        )
        if ids:
            deleted += PublishReceipt.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            break
    return deleted


_pace = Every(PRUNE_SECONDS)
job = Job("Idempotency receipt pruning")


@receiver(tick, dispatch_uid="pushsite-idempotency-pruning")
async def prune_on_tick(sender: object, now: float, **kwargs: Any) -> None:
    """Once a minute per process, in a bookkeeping thread: expired receipts go."""
    if job.busy or not _pace.due(now):
        return

    async def prune() -> None:
        deleted = await off_path(prune_expired)
        if deleted:
            logger.info("Pruned %s expired idempotency receipts.", deleted)

    job.start(prune)
