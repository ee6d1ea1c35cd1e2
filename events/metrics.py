"""Prometheus metrics for this server process (scrape every process).

Counters on the delivery hot path are plain integers in :data:`stats`, read by
events/ops/collectors.py at scrape time: a prometheus ``Counter.inc()`` takes a lock, which
costs more than the delivery itself at tens of thousands per second.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from events.models import Message

# /metrics is public: a channel's name appears in a label only when the channel
# is public; every other channel counts under this one label (docs/security.md).
RESTRICTED_CHANNEL = "(restricted)"
PUBLISH_SECONDS = Histogram(
    "pushsite_publish_seconds",
    "Time to validate and store one message (its fan-out follows in the background).",
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
FANOUT_DROPPED = Counter(
    "pushsite_fanout_dropped_total",
    "Frames the background fan-out never sent: its queue was full, the frame waited longer than "
    "the layer timeout, or the process shut down (the relays read those messages from the database).",
    ["reason"],
)
REJECTED_REQUESTS = Counter("pushsite_rejected_requests_total", "API and stream requests refused.", ["code"])


@dataclass
class DeliveryStats:
    """Hot-path counters for this process, exported by events/ops/collectors.py."""

    connections: int = 0
    connections_opened: int = 0
    deliveries: int = 0
    replayed: int = 0
    # Messages read from the database because of a gap in the layer's frames or
    # the poll found a feed behind: reordering and in-flight frames count too.
    dropped_by_layer: int = 0
    # Of those, the ones whose layer frame came later after all (not lost).
    layer_late: int = 0
    # Of those, the ones whose layer frame never came (LAYER_LOSS_SECONDS): lost by the layer.
    lost_by_layer: int = 0
    slow_reader_evictions: int = 0
    resets: int = 0


stats = DeliveryStats()

# Deliveries per stored message, (channel id, sequence) -> streams reached live /
# from history, since they were last taken: a dict increment per message per
# process on the hot path. The operations app takes and stores them (census).
live_deliveries: Tally[tuple[int, int]] = Tally()
replayed_deliveries: Tally[tuple[int, int]] = Tally()
# Messages published by this process, per channel id (pushsite_messages_published_total).
published_by_channel: Tally[int] = Tally()


def take_delivery_counts() -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """The live and replayed delivery counts gathered since the last call, which resets them."""
    live, replayed = dict(live_deliveries), dict(replayed_deliveries)
    live_deliveries.clear()
    replayed_deliveries.clear()
    return live, replayed


def record_publish(message: Message, seconds: float) -> None:
    # Counted by channel id and labelled at scrape time, when the collector
    # knows which channels are public (events/ops/collectors.py).
    published_by_channel[message.channel_id] += 1
    PUBLISH_SECONDS.observe(seconds)


@dataclass
class LagSummary:
    """Delivery lags since the summary was last taken: how many, their sum and the largest."""

    count: int = 0
    total: float = 0.0
    largest: float = 0.0


_lags = LagSummary()


def record_delivery_lag(published_timestamp: float) -> None:
    lag = max(0.0, time.time() - published_timestamp)
    DELIVERY_LAG_SECONDS.observe(lag)
    _lags.count += 1
    _lags.total += lag
    _lags.largest = max(_lags.largest, lag)


def take_lag_summary() -> LagSummary:
    """The lags recorded since the last call, which starts a new summary (the operations charts)."""
    global _lags
    taken, _lags = _lags, LagSummary()
    return taken
