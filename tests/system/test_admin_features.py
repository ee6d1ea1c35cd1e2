"""Announcements and operations across two real server processes."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support import api
from tests.support.sse_client import Subscriber, ids
from tests.support.waiting import eventually
from tests.system.conftest import Cluster

pytestmark = pytest.mark.system


async def test_a_scheduled_announcement_is_published_exactly_once_by_two_processes(cluster: Cluster) -> None:
    slug = "sys-scheduled"
    cluster.site.create_channels(slug)
    async with (
        Subscriber(f"{cluster.a.url}/events/{slug}/") as on_a,
        Subscriber(f"{cluster.b.url}/events/{slug}/") as on_b,
    ):
        await on_a.opened()
        await on_b.opened()
        await asyncio.to_thread(
            cluster.site.shell,
            "from datetime import timedelta\n"
            "from django.utils import timezone\n"
            "from events.announcements import workflow as announcements\n"
            "from events.announcements.models import Announcement\nfrom events.models import Channel\n"
            f"a = Announcement.objects.create(channel=Channel.objects.get(slug='{slug}'), title='Soon', body='Now')\n"
            "announcements.schedule(a, timezone.now() + timedelta(seconds=2))\n",
        )
        events_a = [await on_a.next_event(timeout=10)]
        events_b = [await on_b.next_event(timeout=10)]
        # Both schedulers ran for at least two more ticks; nothing else may come.
        marker = await api.publish(cluster.a.url, cluster.key, slug, "marker")
        events_a.append(await on_a.next_event(timeout=5))
        events_b.append(await on_b.next_event(timeout=5))
    for events in (events_a, events_b):
        assert [e.event for e in events] == ["announcement", "message"]
        assert json.loads(events[0].data)["data"]["action"] == "published"
        assert ids(events)[1] == marker
    count = await asyncio.to_thread(
        cluster.site.shell,
        f"from events.models import Message; print(Message.objects.filter(channel__slug='{slug}', event='announcement').count())",
    )
    print(f"announcement messages stored: {count.strip().splitlines()[-1]}")
    assert count.strip().splitlines()[-1] == "1"


async def test_deactivating_a_channel_closes_its_streams(cluster: Cluster) -> None:
    slug = "sys-deactivate"
    cluster.site.create_channels(slug)
    async with (
        Subscriber(f"{cluster.a.url}/events/{slug}/") as on_a,
        Subscriber(f"{cluster.b.url}/events/{slug}/") as on_b,
    ):
        await on_a.opened()
        await on_b.opened()
        await asyncio.to_thread(
            cluster.site.shell,
            f"from events.models import Channel; Channel.objects.filter(slug='{slug}').update(is_active=False)",
        )
        for subscriber in (on_a, on_b):
            closing = await subscriber.until_closed(timeout=5)
            assert [e.event for e in closing] == ["pushsite.close"]
            assert json.loads(closing[0].data)["reason"] == "channel deactivated"


async def test_census_and_delivery_reports_add_up_both_processes(cluster: Cluster) -> None:
    slug = "sys-census"
    cluster.site.create_channels(slug)
    subscribers = [Subscriber(f"{server.url}/events/{slug}/") for server in (cluster.a, cluster.a, cluster.b)]
    for subscriber in subscribers:
        await subscriber.__aenter__()
        await subscriber.opened()
    try:
        sequence = await api.publish(cluster.a.url, cluster.key, slug, "count me")
        for subscriber in subscribers:
            assert ids([await subscriber.next_event()]) == [sequence]

        def report() -> str:
            return (
                cluster.site.shell(
                    "from events.models import Message\nfrom events.ops.models import ServerCensus\n"
                    f"m = Message.objects.get(channel__slug='{slug}', sequence={sequence})\n"
                    f"live = sum(c.channels.get('{slug}', 0) for c in ServerCensus.objects.all())\n"
                    "print(m.delivered_live, live)\n"
                )
                .strip()
                .splitlines()[-1]
            )

        final = await eventually(
            lambda: asyncio.to_thread(report),
            lambda line: line == "3 3",
            within=15,
            what="delivered_live and census",
        )
        print(f"delivered live, connections in census: {final}")
    finally:
        for subscriber in subscribers:
            await subscriber.close()
