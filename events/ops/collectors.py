"""Prometheus collector for the relay's and the fan-out's state and the hot-path counters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.deliver import relay as relay_module
from events.metrics import RESTRICTED_CHANNEL, published_by_channel, stats
from events.models import Channel, Visibility
from events.publish import fanout

logger = logging.getLogger(__name__)


def public_slugs(channel_ids: list[int]) -> dict[int, str]:
    """The slugs of the public channels among ``channel_ids`` (none when the database fails)."""
    if not channel_ids:
        return {}
    try:
        return dict(
            Channel.objects.filter(pk__in=channel_ids, visibility=Visibility.PUBLIC).values_list("pk", "slug")
        )
    except (DatabaseError, SynchronousOnlyOperation):
        logger.warning("Metrics: the database did not answer; channel names are left out.")
        return {}


def by_public_label(counts: dict[int, int], slugs: dict[int, str]) -> dict[str, int]:
    """Counts per public channel's slug, every other channel summed under RESTRICTED_CHANNEL."""
    labelled: dict[str, int] = {}
    for channel_id, count in counts.items():
        label = slugs.get(channel_id, RESTRICTED_CHANNEL)
        labelled[label] = labelled.get(label, 0) + count
    return labelled


class DeliveryCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        relay = relay_module.active_relay()
        yield GaugeMetricFamily(
            "pushsite_feeds",
            "Channels this process is subscribed to in the channel layer.",
            value=len(relay.feeds) if relay is not None else 0,
        )
        per_feed = GaugeMetricFamily(
            "pushsite_feed_connections",
            "Open connections per channel this process is subscribed to.",
            labels=["channel"],
        )
        feeds = list(relay.feeds.values()) if relay is not None else []
        public = {feed.channel_id: feed.slug for feed in feeds if feed.visibility == Visibility.PUBLIC}
        connections = {feed.channel_id: len(feed.streams) for feed in feeds}
        for label, count in by_public_label(connections, public).items():
            per_feed.add_metric([label], count)
        yield per_feed
        published = CounterMetricFamily(
            "pushsite_messages_published",
            "Messages stored and fanned out by this process.",
            labels=["channel"],
        )
        counts = dict(published_by_channel)
        for label, count in by_public_label(counts, public_slugs(list(counts))).items():
            published.add_metric([label], count)
        yield published
        yield GaugeMetricFamily(
            "pushsite_asyncio_tasks",
            "Tasks alive in this process's event loop.",
            value=len(asyncio.all_tasks(relay.loop)) if relay is not None else 0,
        )
        yield GaugeMetricFamily(
            "pushsite_fanout_queued",
            "Frames waiting for this process's background fan-out to send them to the channel layer.",
            value=fanout.queued(),
        )
        yield GaugeMetricFamily("pushsite_connections", "Open SSE connections.", value=stats.connections)
        yield CounterMetricFamily(
            "pushsite_connections_opened", "SSE connections accepted.", value=stats.connections_opened
        )
        yield CounterMetricFamily(
            "pushsite_deliveries",
            "Events written to connections, live.",
            value=stats.deliveries,
        )
        yield CounterMetricFamily(
            "pushsite_replayed",
            "Events written to connections from the database (resume or gap fill).",
            value=stats.replayed,
        )
        yield CounterMetricFamily(
            "pushsite_layer_gaps",
            "Messages the relay read from the database because the layer's frames had a gap "
            "(a later message came first) or the poll found a feed behind: reordering between "
            "publishing processes and frames still in flight count too.",
            value=stats.dropped_by_layer,
        )
        yield CounterMetricFamily(
            "pushsite_layer_late",
            "Messages read from the database whose layer frame arrived afterwards (reordered or slow, not lost).",
            value=stats.layer_late,
        )
        yield CounterMetricFamily(
            "pushsite_layer_lost",
            "Messages the channel layer never delivered to this process: read from the database and "
            "still not delivered by the layer 5 s later.",
            value=stats.lost_by_layer,
        )
        yield CounterMetricFamily(
            "pushsite_slow_reader_evictions",
            "Connections closed because they did not read fast enough.",
            value=stats.slow_reader_evictions,
        )
        yield CounterMetricFamily(
            "pushsite_resets",
            "Reset events sent because requested history was no longer kept.",
            value=stats.resets,
        )


_registered = False


def register() -> None:
    """Register once per process (AppConfig.ready may run more than once in tests)."""
    global _registered
    if not _registered:
        REGISTRY.register(DeliveryCollector())
        _registered = True
