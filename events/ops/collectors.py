"""Prometheus collector for the relay's state and the hot-path counters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.deliver import relay as relay_module
from events.metrics import stats


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
        for feed in list(relay.feeds.values()) if relay is not None else []:
            per_feed.add_metric([feed.slug], len(feed.streams))
        yield per_feed
        yield GaugeMetricFamily(
            "pushsite_asyncio_tasks",
            "Tasks alive in this process's event loop.",
            value=len(asyncio.all_tasks(relay.loop)) if relay is not None else 0,
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
