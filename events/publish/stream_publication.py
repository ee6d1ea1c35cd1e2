"""One logical stream published into a channel: a stream id, numbered parts, one end event.

Shared by the streaming endpoint (events/publish/ingest.py), ``manage.py pipe`` and the
demo. Each part is a message whose data is ``{"stream", "part", "data"}``, with
the part's own event type; the stream always ends with exactly one
``pushsite.stream.end`` event, ``{"stream", "parts", "status", "reason"}``,
whose status is ``done`` or ``failed`` (parts sent before a failure stay valid).

How parts are kept depends on the channel's ``stream_storage``: ``keep`` stores
each part like any message (late joiners replay them); ``fold`` sends parts to
live subscribers only (publishing.fan_out_ephemeral) and stores the whole
stream once, as its end event with the parts under ``"folded"``.

Kept parts are stored in chunks (issue 17): :meth:`StreamPublication.aqueue`
checks a part and queues it; while one chunk commits, the next parts are read
and wait; when it has committed (and been fanned out), the parts waiting then
(at most ``writers.MAX_BATCH``) go to the group commit as the next chunk, one
unit stored in one transaction. No timer: a lone part goes at once. A chunk that
fails stores nothing, and nothing read after it is stored, so the stored parts
are always the first ones, numbered in order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from events.conf import conf
from events.exceptions import PayloadTooLarge
from events.models import Channel, Message, StreamStorage
from events.publish import store as publishing
from events.publish import validate, writers
from events.publish.idempotency import Replay
from events.wire import frames

logger = logging.getLogger(__name__)

STREAM_END_EVENT = "pushsite.stream.end"
DONE = "done"
FAILED = "failed"
MAX_REASON_LENGTH = 300
# Room in a folded end event for everything but the parts (id, counts, reason).
FOLD_ENVELOPE_BYTES = 512


@dataclass(frozen=True, slots=True)
class _Queued:
    """A kept part, checked and numbered, not yet stored."""

    event: str
    data: Any
    size: int
    publish: publishing.Publish


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Parts handed to the group commit as one unit."""

    parts: list[_Queued]
    stored: asyncio.Future[list[Message | Replay | Exception]]
    started: float


def new_stream_id() -> str:
    """A short random id, URL- and SSE-safe."""
    return secrets.token_urlsafe(9)


class StreamPublication:
    """The parts and the end of one stream; not thread-safe (one publisher drives it)."""

    def __init__(self, channel: Channel, *, publisher: str, key_id: int | None = None) -> None:
        self.id = new_stream_id()
        self.channel = channel
        self.publisher = publisher
        # The API key publishing it: each stored part is refused once that key is
        # revoked or no longer allowed on the channel (ChannelNotFound, as store.py says).
        self.key_id = key_id
        self.fold = channel.stream_storage == StreamStorage.FOLD
        # Parts published (stored and sent; fold: sent), and their data's bytes.
        self.parts = 0
        self.bytes = 0
        # Parts accepted (checked and numbered), published or not yet.
        self.accepted = 0
        self.accepted_bytes = 0
        self._waiting: list[_Queued] = []
        self._chunk: _Chunk | None = None
        self.status: str | None = None
        self.end_message: Message | None = None
        # Called with the end event's message inside the transaction that stores
        # it (a streamed publish's Idempotency-Key is settled with its end).
        self.settle: Callable[[Message], None] | None = None
        self._folded: list[dict[str, Any]] = []
        self._folded_bytes = 0

    # --- the rules, without I/O ------------------------------------------------------

    def _prepare(self, event: str, data: Any) -> tuple[dict[str, Any], int]:
        """The next part's payload and data size; raises when it breaks a rule or a limit."""
        if self.status is not None:
            raise RuntimeError(f"Stream {self.id} has already ended ({self.status}).")
        validate.validate_event_type(event)
        size = len(frames.dumps(data).encode())
        max_parts = conf.STREAM_MAX_PARTS
        if self.accepted >= max_parts:
            raise PayloadTooLarge(f"A stream may have at most {max_parts} parts.")
        max_bytes = conf.STREAM_MAX_BYTES
        if self.accepted_bytes + size > max_bytes:
            raise PayloadTooLarge(f"A stream may carry at most {max_bytes} bytes of data in all.")
        if self.fold:
            room = conf.MAX_MESSAGE_BYTES - FOLD_ENVELOPE_BYTES
            if self._folded_bytes + self._folded_size(event, data) > room:
                raise PayloadTooLarge(
                    f"The channel {self.channel.slug!r} folds each stream into one message, and this "
                    f"stream would no longer fit in {conf.MAX_MESSAGE_BYTES} bytes."
                )
        return {"stream": self.id, "part": self.accepted + 1, "data": data}, size

    @staticmethod
    def _folded_size(event: str, data: Any) -> int:
        return len(frames.dumps({"event": event, "data": data}).encode()) + 1

    def _accept(self, size: int) -> None:
        self.accepted += 1
        self.accepted_bytes += size

    def _count(self, event: str, data: Any, size: int) -> None:
        self.parts += 1
        self.bytes += size
        if self.fold:
            self._folded.append({"event": event, "data": data})
            self._folded_bytes += self._folded_size(event, data)

    def _end_payload(self, status: str, reason: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "stream": self.id,
            "parts": self.parts,
            "status": status,
            "reason": reason[:MAX_REASON_LENGTH] if reason else None,
        }
        if self.fold:
            payload["folded"] = self._folded
        return payload

    def _ending(self, status: str) -> bool:
        """Mark the stream ended; False if it already was (the end is sent once)."""
        if self.status is not None:
            return False
        self.status = status
        return True

    # --- async (the HTTP endpoint, the demo) ------------------------------------------

    async def apart(self, data: Any, *, event: str = "message") -> None:
        """Publish the next part: stored and fanned out, or (fold) live-only."""
        await self.aqueue(data, event=event)
        await self.aflush()

    async def aqueue(self, data: Any, *, event: str = "message") -> None:
        """Accept the next part: checked now, stored with the parts around it (fold: sent now).

        Raises what refuses it (nothing of it is stored), or the failure of an
        earlier chunk that has just been found to fail.
        """
        payload, size = self._prepare(event, data)
        if self.fold:
            await publishing.fan_out_ephemeral(self.channel, payload, event=event)
            self._accept(size)
            self._count(event, data, size)
            return
        publish = publishing.prepared(
            self.channel, payload, event=event, publisher=self.publisher, key_id=self.key_id
        )
        self._accept(size)
        self._waiting.append(_Queued(event, data, size, publish))
        # why: waiting for the chunk in flight only once a whole chunk waits bounds
        # what a stream holds (two chunks) while the body is read on meanwhile.
        await self._advance(wait=len(self._waiting) >= writers.MAX_BATCH)

    async def aflush(self) -> None:
        """Every accepted part stored and fanned out; raises the failure of the first chunk that was not."""
        while self._chunk is not None or self._waiting:
            await self._advance(wait=True)

    async def _advance(self, *, wait: bool) -> None:
        """Settle the chunk in flight if it is done (or ``wait``), then send the waiting parts as the next."""
        if self._chunk is not None and (wait or self._chunk.stored.done()):
            await self._settle()
        if self._chunk is None and self._waiting:
            parts = self._waiting[: writers.MAX_BATCH]
            del self._waiting[: writers.MAX_BATCH]
            self._chunk = _Chunk(
                parts, publishing.store_unit([part.publish for part in parts]), time.perf_counter()
            )

    async def _settle(self) -> None:
        """The chunk in flight, once committed: each part fanned out and counted, in order."""
        chunk = self._chunk
        assert chunk is not None
        try:
            # Shielded: the group commit stores a chunk whether or not anyone waits.
            outcomes = await asyncio.shield(chunk.stored)
        except asyncio.CancelledError:
            # This task is cancelled (the server stops): the chunk stays in flight, so
            # the end event (_abandon) counts it once it commits, before it is stored.
            self._waiting.clear()
            raise
        except BaseException:
            self._chunk = None
            self._waiting.clear()  # never stored after a chunk that was not
            raise
        self._chunk = None
        for part, outcome in zip(chunk.parts, outcomes, strict=True):
            if not isinstance(outcome, Message):
                # Refused (the key revoked or narrowed, the channel switched off): a
                # chunk shares its key and channel, so none of it was stored.
                self._waiting.clear()
                if isinstance(outcome, Exception):
                    raise outcome
                raise RuntimeError(f"A part of stream {self.id} was answered {outcome!r}.")
            await publishing.fan_out(outcome)
            publishing.record_published(outcome, chunk.started)
            self._count(part.event, part.data, part.size)

    async def _abandon(self) -> None:
        """Drop the parts not sent yet; the chunk in flight, if any, is counted if it commits."""
        self._waiting.clear()
        if self._chunk is not None:
            try:
                await self._settle()
            except Exception as error:
                logger.info("The last chunk of stream %s was not stored: %s", self.id, error)

    async def aend(self, status: str = DONE, reason: str | None = None) -> Message | None:
        """Store and send the end event (once), after the parts; None if the stream had already ended.

        ``done`` stores every accepted part first (raising if they cannot be);
        ``failed`` keeps only the parts already handed to the group commit.
        """
        if self.status is not None:
            return None
        if status == DONE:
            await self.aflush()
        else:
            await self._abandon()
        if not self._ending(status):
            return None
        started = time.perf_counter()
        message: Message = await database_sync_to_async(self._store_end)(status, reason)
        await publishing.fan_out(message)
        publishing.record_published(message, started)
        self.end_message = message
        return message

    # --- sync (management commands) ------------------------------------------------------

    def part(self, data: Any, *, event: str = "message") -> None:
        """Sync twin of :meth:`apart`."""
        payload, size = self._prepare(event, data)
        if self.fold:
            publishing.fan_out_ephemeral_now(self.channel, payload, event=event)
        else:
            publishing.publish(self.channel, payload, event, publisher=self.publisher)
        self._accept(size)
        self._count(event, data, size)

    def end(self, status: str = DONE, reason: str | None = None) -> Message | None:
        """Sync twin of :meth:`aend`."""
        if not self._ending(status):
            return None
        started = time.perf_counter()
        message = self._store_end(status, reason)
        transaction.on_commit(lambda: publishing.fan_out_now(message))
        publishing.record_published(message, started)
        self.end_message = message
        return message

    def _store_end(self, status: str, reason: str | None) -> Message:
        with transaction.atomic():
            message = publishing.store_platform_message(
                self.channel,
                self._end_payload(status, reason),
                event=STREAM_END_EVENT,
                publisher=self.publisher,
            )
            if self.settle is not None:
                self.settle(message)
        return message

    def summary(self) -> dict[str, Any]:
        """What the publisher is told when the stream ends."""
        return {
            "stream": self.id,
            "channel": self.channel.slug,
            "parts": self.parts,
            "status": self.status,
            "end_id": self.end_message.sequence if self.end_message is not None else None,
        }
