"""Reading stored messages back: replay on resume and gap filling."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from channels.db import database_sync_to_async

from events.models import Channel, Message, new_epoch
from events.wire import frames


@dataclass(frozen=True, slots=True)
class StoredFrame:
    sequence: int
    fields: bytes
    published: float


def frames_after(channel_id: int, slug: str, after: int, limit: int) -> list[StoredFrame]:
    """Up to ``limit`` messages with a sequence above ``after``, in order, encoded."""
    rows = (
        Message.objects.filter(channel_id=channel_id, sequence__gt=after)
        .order_by("sequence")
        .values_list("sequence", "event", "data", "created_at")[:limit]
    )
    return [
        StoredFrame(
            sequence=sequence,
            fields=frames.message_fields(
                slug=slug, sequence=sequence, event=event, data=data, published_at=created_at
            ),
            published=created_at.timestamp(),
        )
        for sequence, event, data, created_at in rows
    ]


afetch_frames_after = database_sync_to_async(frames_after)


def rewind_position(channel: Channel, count: int) -> int:
    """The position to start from so that the last ``count`` stored messages are replayed.

    Just before the ``count``-th newest stored message (up to the channel's
    ``last_sequence`` as read), so replay begins with it and no reset is
    needed; fewer stored messages give them all; none gives the end.
    """
    stored = (
        Message.objects.filter(channel_id=channel.pk, sequence__lte=channel.last_sequence)
        .order_by("-sequence")
        .values_list("sequence", flat=True)[:count]
    )
    sequences = list(stored)
    return sequences[-1] - 1 if sequences else channel.last_sequence


@dataclass(frozen=True, slots=True)
class ChannelState:
    last_sequence: int
    is_active: bool
    visibility: str
    epoch: str
    # The whole row as read, for the process's channel directory (events/deliver/directory.py).
    row: Channel | None = None


def channel_states(channel_ids: Iterable[int]) -> dict[int, ChannelState]:
    """Current position and state of each channel, in one query."""
    return {
        row.pk: ChannelState(row.last_sequence, row.is_active, row.visibility, row.epoch, row)
        for row in Channel.objects.filter(pk__in=list(channel_ids))
    }


afetch_channel_states = database_sync_to_async(channel_states)


def renew_epoch(channel_id: int, old_epoch: str) -> None:
    """A new epoch for the channel, unless another process already gave it one."""
    Channel.objects.filter(pk=channel_id, epoch=old_epoch).update(epoch=new_epoch())


arenew_epoch = database_sync_to_async(renew_epoch)
