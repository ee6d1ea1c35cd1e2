"""The per-address stream cap is counted across server processes that share Redis (issue 13)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.services import PostgresDatabase
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually
from tests.system.conftest import Cluster, start_cluster

pytestmark = pytest.mark.system

CAP = 4


@pytest.fixture
def capped_cluster(tmp_path: Path, prepared_database: PostgresDatabase) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, prepared_database, pushsite={"MAX_STREAMS_PER_IP": str(CAP)})
    yield running
    running.stop()
    running.redis.stop()


async def burst(cluster: Cluster, slug: str, each: int) -> list[Subscriber]:
    urls = [f"{server.url}/events/{slug}/" for server in (cluster.a, cluster.b)]
    subscribers = [Subscriber(url) for url in urls for _ in range(each)]
    await asyncio.gather(*(subscriber.__aenter__() for subscriber in subscribers))
    return subscribers


async def test_a_burst_on_two_processes_gets_no_more_than_the_cap_in_all(capped_cluster: Cluster) -> None:
    slug = "capped"
    await asyncio.to_thread(capped_cluster.site.create_channels, slug)
    first = await burst(capped_cluster, slug, each=10)
    try:
        # Each process alone would allow CAP: together they allow CAP, not 2 x CAP.
        assert Counter(subscriber.status for subscriber in first) == {200: CAP, 429: 20 - CAP}
        refused = [await subscriber.body() for subscriber in first if subscriber.status == 429]
        assert {body["error"] for body in refused} == {"rate_limited"}
        # Most refusals come from the shared count: neither process reached the cap alone.
        assert any("on this site's servers" in body["detail"] for body in refused)
    finally:
        await asyncio.gather(*(subscriber.close() for subscriber in first))

    leases = redis.Redis.from_url(capped_cluster.redis.url)

    async def leases_held() -> int:
        return int(await asyncio.to_thread(leases.zcard, "pushsite:streams:127.0.0.1"))

    await eventually(leases_held, lambda count: count == 0, within=10, what="stream leases after closing")
    # Every lease went back: the whole cap is there again, on either process.
    second = await burst(capped_cluster, slug, each=3)
    try:
        assert Counter(subscriber.status for subscriber in second) == {200: CAP, 429: 6 - CAP}
    finally:
        await asyncio.gather(*(subscriber.close() for subscriber in second))
