"""What each server process reports for the admin: its connections, and per-message deliveries.

Counting happens in memory on the hot path (a dict increment per message per
process, not per connection); every CENSUS_SECONDS the relay writes it to the
database in one short transaction, so the admin can add up all processes.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from events.models import Message, ServerCensus

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
STARTED_AT = timezone.now()

# (channel id, sequence) -> streams reached live / from history, since the last flush.
live_deliveries: Counter[tuple[int, int]] = Counter()
replayed_deliveries: Counter[tuple[int, int]] = Counter()


def report(connections: int, per_channel: dict[str, int]) -> None:
    """Write this process's census and the delivery counts gathered since the last call."""
    live = dict(live_deliveries)
    replayed = dict(replayed_deliveries)
    live_deliveries.clear()
    replayed_deliveries.clear()
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
