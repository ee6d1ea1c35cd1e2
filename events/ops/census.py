"""What each server process reports for the admin: its connections, and per-message deliveries.

The core counts deliveries in memory on the hot path (events/metrics.py: a
dict increment per message per process, not per connection); every
CENSUS_SECONDS, on the process's tick, this writes them to the database in one
short transaction, so the admin can add up all processes.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection as db_connection
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from events import metrics
from events.models import Message
from events.ops.models import ServerCensus
from events.runtime.bookkeeping import Job, off_path
from events.runtime.tick import Every
from events.signals import tick

CENSUS_SECONDS = 5.0
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
STARTED_AT = timezone.now()

if TYPE_CHECKING:
    from events.deliver.relay import Relay

logger = logging.getLogger(__name__)

Counts = dict[tuple[int, int], int]
# Bounds on one flush (one every CENSUS_SECONDS): beyond them, detail is dropped.
MAX_MESSAGES_PER_FLUSH = 20_000
ROWS_PER_STATEMENT = 500

_pace = Every(CENSUS_SECONDS)
job = Job("Census")


def report(
    connections: int,
    per_channel: dict[str, int],
    counts: tuple[Counts, Counts] | None = None,
) -> None:
    """Write this process's census and the delivery counts gathered since the last call.

    On the tick it runs in a bookkeeping thread with its own database
    connection (events/runtime/bookkeeping.py), never the thread that stream
    admission and gap filling use (issue 15): a slow write here delays nothing
    but the admin's numbers. ``counts`` are taken on the event loop, where the
    hot path adds to them, so none is lost between the copy and the reset.
    """
    live, replayed = counts if counts is not None else metrics.take_delivery_counts()
    now = timezone.now()
    try:
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
            add_delivery_counts(live, replayed)
    finally:
        # A pooled connection goes back to the pool; a thread's own is closed.
        db_connection.close()


def add_delivery_counts(live: Counts, replayed: Counts) -> None:
    """Add the counts to their messages: one UPDATE per batch of messages, not one per message.

    Past MAX_MESSAGES_PER_FLUSH distinct messages, the oldest are left out
    (logged): bookkeeping degrades by dropping detail, never by taking longer.
    """
    keys = sorted(set(live) | set(replayed), key=lambda key: key[1], reverse=True)
    if len(keys) > MAX_MESSAGES_PER_FLUSH:
        logger.warning(
            "Delivery report: %s messages since the last flush; counting the newest %s only.",
            len(keys),
            MAX_MESSAGES_PER_FLUSH,
        )
        keys = keys[:MAX_MESSAGES_PER_FLUSH]
    for start in range(0, len(keys), ROWS_PER_STATEMENT):
        batch = keys[start : start + ROWS_PER_STATEMENT]
        params: list[int] = []
        for channel_id, sequence in batch:
            params += [
                channel_id,
                sequence,
                live.get((channel_id, sequence), 0),
                replayed.get((channel_id, sequence), 0),
            ]
        with db_connection.cursor() as cursor:
            cursor.execute(_add_counts_sql(len(batch)), params)


def _add_counts_sql(rows: int) -> str:
    # UPDATE ... FROM a derived table works on PostgreSQL and on SQLite >= 3.33;
    # a SELECT ... UNION ALL, because SQLite cannot name a VALUES list's columns.
    row = "SELECT CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS BIGINT)"
    first = (
        "SELECT CAST(%s AS BIGINT) AS channel_id, CAST(%s AS BIGINT) AS sequence,"
        " CAST(%s AS BIGINT) AS live, CAST(%s AS BIGINT) AS replayed"
    )
    derived = " UNION ALL ".join([first, *[row] * (rows - 1)])
    table = Message._meta.db_table
    return (
        f"UPDATE {table} SET delivered_live = {table}.delivered_live + counts.live,"
        f" delivered_replay = {table}.delivered_replay + counts.replayed"
        f" FROM ({derived}) AS counts"
        f" WHERE {table}.channel_id = counts.channel_id AND {table}.sequence = counts.sequence"
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
    if not _pace.due(now) or job.busy:
        # The last flush is still writing: skip a turn rather than queue up;
        # the counts wait in memory for the next one.
        return
    per_channel = {feed.slug: len(feed.streams) for feed in sender.feeds.values()}
    connections = len(sender.streams)
    counts = metrics.take_delivery_counts()

    async def flush() -> None:
        await off_path(report, connections, per_channel, counts)

    job.start(flush)
