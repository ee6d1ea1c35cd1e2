"""Prometheus metrics for this server process (scrape every process).

Counters on the delivery hot path are plain integers in :data:`stats`, read by
events/collectors.py at scrape time: a prometheus ``Counter.inc()`` takes a lock, which
costs more than the delivery itself at tens of thousands per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from .opssamples import recorder

if TYPE_CHECKING:
    from .models import Message

PUBLISHED = Counter("pushsite_messages_published_total", "Messages stored and fanned out.", ["channel"])
PUBLISH_SECONDS = Histogram(
    "pushsite_publish_seconds",
    "Time to validate, store and fan out one message.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DELIVERY_LAG_SECONDS = Histogram(
    "pushsite_delivery_lag_seconds",
    "Time from a message being stored to this process handing it to its connections.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FANOUT_FAILURES = Counter(
    "pushsite_fanout_failures_total",
    "Channel-layer sends that failed (the relays replay those messages from the database).",
)
REJECTED_REQUESTS = Counter("pushsite_rejected_requests_total", "API and stream requests refused.", ["code"])


@dataclass
class DeliveryStats:
    """Hot-path counters for this process, exported by events/collectors.py."""

    connections: int = 0
    connections_opened: int = 0
    deliveries: int = 0
    replayed: int = 0
    dropped_by_layer: int = 0
    slow_reader_evictions: int = 0
    resets: int = 0


stats = DeliveryStats()


def record_publish(message: Message, seconds: float) -> None:
    PUBLISHED.labels(channel=message.channel.slug).inc()
    PUBLISH_SECONDS.observe(seconds)


def record_delivery_lag(published_timestamp: float) -> None:
    now = time.time()
    lag = max(0.0, now - published_timestamp)
    DELIVERY_LAG_SECONDS.observe(lag)
    recorder.record_lag(lag, now)  # the operations page's latency chart
