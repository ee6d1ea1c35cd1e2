"""What each server process reports for the admin: its connections, and per-message deliveries.

The core counts deliveries in memory on the hot path (events/metrics.py: a
dict increment per message per process, not per connection); every
CENSUS_SECONDS, on the process's tick, this writes them to the database in one
short transaction, so the admin can add up all processes.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F
from django.dispatch import receiver
from django.utils import timezone

from events import metrics
from events.models import Message
from events.ops.models import ServerCensus
from events.runtime.tick import Every
from events.signals import tick

CENSUS_SECONDS = 5.0
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
STARTED_AT = timezone.now()

if TYPE_CHECKING:
    from events.deliver.relay import Relay

_pace = Every(CENSUS_SECONDS)


def report(connections: int, per_channel: dict[str, int]) -> None:
    """Write this process's census and the delivery counts gathered since the last call."""
    live, replayed = metrics.take_delivery_counts()
    now = timezone.now()
    with transaction.atomic():
        ServerCensus.objects.update_or_create(
            process=PROCESS,
            defaults={
                "connections": connections,
                "channels": per_channel,
                "started_at": STARTED_AT,
                "updated_at": now,
            },
        )
        for (channel_id, sequence), count in live.items():
            Message.objects.filter(channel_id=channel_id, sequence=sequence).update(
                delivered_live=F("delivered_live") + count
            )
        for (channel_id, sequence), count in replayed.items():
            Message.objects.filter(channel_id=channel_id, sequence=sequence).update(
                delivered_replay=F("delivered_replay") + count
            )


def forget() -> None:
    """Remove this process's row (clean shutdown)."""
    ServerCensus.objects.filter(process=PROCESS).delete()


def fresh_since(moment: datetime) -> list[ServerCensus]:
    """Processes that reported after ``moment`` (the others are gone or stuck)."""
    return list(ServerCensus.objects.filter(updated_at__gte=moment))


@receiver(tick, dispatch_uid="pushsite-census")
async def report_on_tick(sender: Relay, now: float, **kwargs: Any) -> None:
    """Every CENSUS_SECONDS: this process's connections and the deliveries counted since."""
    if not _pace.due(now):
        return
    per_channel = {feed.slug: len(feed.streams) for feed in sender.feeds.values()}
    await database_sync_to_async(report)(len(sender.streams), per_channel)
