"""Several server processes on Redis and PostgreSQL: the guarantees of ARCHITECTURE.md §4."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import api
from tests.support.servers import ServerProcess
from tests.support.services import PostgresDatabase
from tests.support.sse_client import Subscriber, follow, ids
from tests.support.waiting import eventually
from tests.system.conftest import Cluster, start_cluster

pytestmark = pytest.mark.system


def report(name: str, sent: list[int], received: list[int]) -> None:
    """Print what a subscriber measured, and assert exactly-once, in order."""
    counts = Counter(received)
    lost = sorted(set(sent) - set(received))
    duplicated = sorted(seq for seq, n in counts.items() if n > 1)
    print(
        f"{name}: sent={len(sent)} received={len(received)} lost={len(lost)} "
        f"duplicated={len(duplicated)} in_order={received == sorted(received)}"
    )
    assert lost == [], f"{name} lost {lost[:10]}"
    assert duplicated == [], f"{name} duplicated {duplicated[:10]}"
    assert received == sorted(sent)


async def publish_many(base_url: str, key: str, slug: str, count: int, tag: str) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        return [
            await api.publish(base_url, key, slug, {"from": tag, "n": n}, client=client) for n in range(count)
        ]


async def test_concurrent_publishers_reach_every_subscriber_on_both_processes(
    cluster: Cluster, prepared_database: PostgresDatabase
) -> None:
    slug = "sys-fanout"
    cluster.site.create_channels(slug)
    urls = [f"{server.url}/events/{slug}/" for server in (cluster.a, cluster.a, cluster.b, cluster.b)]
    connected = [asyncio.Event() for _ in urls]
    followers = [
        asyncio.create_task(follow([url], expect=2000, timeout=120, connected=ready))
        for url, ready in zip(urls, connected, strict=True)
    ]
    async with asyncio.timeout(10):
        for ready in connected:
            await ready.wait()
    started = time.monotonic()
    batches = await asyncio.gather(
        *(
            publish_many(server.url, cluster.key, slug, 500, f"p{n}")
            for n, server in enumerate((cluster.a, cluster.a, cluster.b, cluster.b))
        )
    )
    sent = sorted(seq for batch in batches for seq in batch)
    print(f"published 2000 in {time.monotonic() - started:.1f}s")
    assert sent == list(range(1, 2001)), "sequence numbers must be distinct and gapless"
    for n, follower in enumerate(followers):
        report(f"subscriber {n} on {'AABB'[n]}", sent, await follower)
    # Two processes, each with a pool of at most DATABASE_POOL_SIZE (10).
    connections = await asyncio.to_thread(prepared_database.connection_count)
    print(f"database connections after 2000 publishes: {connections}")
    assert connections <= 2 * 10


async def test_reconnecting_to_the_other_process_misses_nothing(cluster: Cluster) -> None:
    slug = "sys-switch"
    cluster.site.create_channels(slug)
    first = [await api.publish(cluster.a.url, cluster.key, slug, n) for n in range(5)]
    async with Subscriber(f"{cluster.a.url}/events/{slug}/", headers={"Last-Event-ID": "0"}) as on_a:
        seen = await on_a.events(3)
    resume_from = seen[-1].id
    more = [await api.publish(cluster.b.url, cluster.key, slug, n) for n in range(5, 8)]
    async with Subscriber(f"{cluster.b.url}/events/{slug}/", headers={"Last-Event-ID": resume_from}) as on_b:
        rest = await on_b.events(5)
        live = await api.publish(cluster.a.url, cluster.key, slug, "live")
        rest += [await on_b.next_event()]
    report("switched subscriber", [*first, *more, live], ids(seen) + ids(rest))


async def test_idle_streams_hold_no_database_connection(
    cluster: Cluster, prepared_database: PostgresDatabase
) -> None:
    slug = "sys-idle"
    cluster.site.create_channels(slug)
    before = await asyncio.to_thread(prepared_database.connection_count)
    subscribers = [Subscriber(f"{cluster.a.url}/events/{slug}/") for _ in range(40)]
    try:
        for subscriber in subscribers:
            await subscriber.__aenter__()
            await subscriber.opened()
        during = await asyncio.to_thread(prepared_database.connection_count)
        print(f"database connections: before={before} with 40 open streams={during}")
        # Worker threads may keep a connection each; streams must not.
        assert during - before < 10
    finally:
        for subscriber in subscribers:
            await subscriber.close()


async def test_a_connection_held_past_group_expiry_still_receives(
    tmp_path: Path, prepared_database: PostgresDatabase
) -> None:
    # The core layer drops group members after group_expiry; the relay re-joins
    # every quarter of it. Without that, delivery would fall back to the
    # database poll, which the gap counter would show.
    running = start_cluster(
        tmp_path,
        prepared_database,
        env={"REDIS_LAYER": "core", "REDIS_GROUP_EXPIRY": "2"},
        pushsite={"RELAY_POLL_SECONDS": "30"},
    )
    try:
        slug = "sys-expiry"
        running.site.create_channels(slug)
        async with Subscriber(f"{running.a.url}/events/{slug}/") as subscriber:
            await subscriber.opened()
            await asyncio.sleep(5)  # hold the connection for 2.5 times group_expiry (the point of the test)
            sequence = await api.publish(running.b.url, running.key, slug, "after expiry")
            event = await subscriber.next_event(timeout=3)
        assert ids([event]) == [sequence]
        gaps = (await asyncio.to_thread(running.a.metrics)).get("pushsite_layer_gaps_total", 0)
        print(f"delivered live after {5}s > group_expiry 2s; layer gaps filled from the database: {gaps}")
        assert gaps == 0
    finally:
        running.stop()
        running.redis.stop()


async def test_redis_restart_loses_no_acknowledged_message(own_cluster: Cluster) -> None:
    cluster = own_cluster
    slug = "sys-redis-restart"
    cluster.site.create_channels(slug)
    total = 300
    connected = [asyncio.Event() for _ in range(2)]
    followers = [
        asyncio.create_task(
            follow([f"{server.url}/events/{slug}/"], expect=total, timeout=90, connected=ready)
        )
        for server, ready in zip((cluster.a, cluster.b), connected, strict=True)
    ]
    for ready in connected:
        await asyncio.wait_for(ready.wait(), 10)

    acknowledged: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(total):
            if n == 100:
                cluster.redis.stop()
                print("redis stopped")
                await check_degraded_answers(cluster, slug)
            if n == 200:
                cluster.redis.start()
                print("redis started again")
            server = cluster.a if n % 2 else cluster.b
            acknowledged.append(await api.publish(server.url, cluster.key, slug, n, client=client))
    for name, follower in zip(("on A", "on B"), followers, strict=True):
        report(f"subscriber {name} across a Redis restart", acknowledged, await follower)
    # Live delivery resumes without a process restart.
    await eventually(
        lambda: asyncio.to_thread(lambda: httpx.get(f"{cluster.a.url}/healthz").status_code),
        lambda status: status == 200,
        within=10,
        what="healthz of A after Redis returned",
    )


async def check_degraded_answers(cluster: Cluster, slug: str) -> None:
    """While Redis is down: health says so, new streams get a quick 503, open streams heart-beat."""
    async with httpx.AsyncClient(timeout=10) as client:
        health = await client.get(f"{cluster.a.url}/healthz")
        assert health.status_code == 503
        assert health.json()["channel_layer"].startswith("error")
    # A stream on a channel this process already follows opens and heart-beats.
    async with Subscriber(f"{cluster.a.url}/events/{slug}/") as open_stream:
        await open_stream.wait_for_bytes(b": keep-alive\n\n", timeout=4)
    print("an open stream heart-beats during the outage")
    cluster.site.create_channels("sys-new-during-outage")
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        refused = await client.get(f"{cluster.a.url}/events/sys-new-during-outage/")
        elapsed = time.monotonic() - started
    print(f"new stream during the outage: {refused.status_code} in {elapsed:.2f}s")
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert refused.json()["error"] == "unavailable"
    assert elapsed < 5


async def test_a_killed_process_clients_resume_on_the_other(own_cluster: Cluster) -> None:
    cluster = own_cluster
    slug = "sys-kill"
    cluster.site.create_channels(slug)
    total = 200
    connected = [asyncio.Event() for _ in range(3)]
    urls = [f"{cluster.a.url}/events/{slug}/", f"{cluster.b.url}/events/{slug}/"]
    followers = [
        asyncio.create_task(follow(urls, expect=total, timeout=90, connected=ready)) for ready in connected
    ]
    for ready in connected:
        await asyncio.wait_for(ready.wait(), 10)
    acknowledged: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(total):
            if n == 80:
                assert cluster.a.process is not None
                os.kill(cluster.a.process.pid, signal.SIGKILL)
                print("process A killed")
            acknowledged.append(await api.publish(cluster.b.url, cluster.key, slug, n, client=client))
    for n, follower in enumerate(followers):
        report(f"subscriber {n} (A killed, resumed on B)", acknowledged, await follower)


async def test_sigterm_ends_streams_cleanly_and_quickly(
    tmp_path: Path, prepared_database: PostgresDatabase
) -> None:
    running = start_cluster(tmp_path, prepared_database)
    try:
        slug = "sys-sigterm"
        running.site.create_channels(slug)
        subscribers = [Subscriber(f"{running.a.url}/events/{slug}/") for _ in range(5)]
        for subscriber in subscribers:
            await subscriber.__aenter__()
            await subscriber.opened()
        started = time.monotonic()
        process = running.a.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        for subscriber in subscribers:
            # The client is told why, and the response ends properly (chunked
            # terminator), not with a reset.
            closing = await subscriber.until_closed(timeout=5)
            assert [event.event for event in closing] == ["pushsite.close"]
            assert json.loads(closing[0].data)["reason"] == "server shutting down"
        exit_code = await asyncio.to_thread(process.wait, 15)
        elapsed = time.monotonic() - started
        print(f"SIGTERM: 5 streams closed and process exited ({exit_code}) in {elapsed:.2f}s")
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert exit_code in {0, -signal.SIGTERM}
        assert "Exception in ASGI application" not in running.a.log()
        assert elapsed < 10
        for subscriber in subscribers:
            await subscriber.close()
    finally:
        running.stop()
        running.redis.stop()


async def test_database_outage_publish_is_503_and_nothing_is_broadcast(
    cluster: Cluster, prepared_database: PostgresDatabase
) -> None:
    slug = "sys-db-down"
    cluster.site.create_channels(slug)
    async with Subscriber(f"{cluster.b.url}/events/{slug}/") as subscriber:
        await subscriber.opened()
        await asyncio.to_thread(prepared_database.allow_connections, False)
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                started = time.monotonic()
                response = await client.post(
                    f"{cluster.a.url}/api/channels/{slug}/messages",
                    json={"data": "lost?"},
                    headers={"Authorization": f"Bearer {cluster.key}"},
                )
                elapsed = time.monotonic() - started
                health = await client.get(f"{cluster.a.url}/healthz")
        finally:
            await asyncio.to_thread(prepared_database.allow_connections, True)
        print(f"publish during a database outage: {response.status_code} in {elapsed:.1f}s {response.text}")
        assert response.status_code == 503
        assert elapsed < 6  # DATABASE_POOL_TIMEOUT is 3 s
        assert response.json()["error"] == "unavailable"
        assert health.status_code == 503
        assert health.json()["database"].startswith("error")
        after = await api.publish(cluster.a.url, cluster.key, slug, "after")
        # The first event the subscriber sees is the one published after the outage.
        assert ids([await subscriber.next_event(timeout=5)]) == [after]
        assert after == 1


async def test_sqlite_takes_50_concurrent_publishers(server: ServerProcess, api_key: str) -> None:
    slug = "pool-55"
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=60)) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{server.url}/api/channels/{slug}/messages",
                    json={"data": n},
                    headers={"Authorization": f"Bearer {api_key}"},
                )
                for n in range(50)
            )
        )
    statuses = Counter(response.status_code for response in responses)
    print(f"50 concurrent publishes on SQLite: {dict(statuses)}")
    assert statuses == {201: 50}
    assert "database is locked" not in server.log()
    assert len({response.json()["id"] for response in responses}) == 50


async def test_serve_with_workers_shares_one_port(
    tmp_path: Path, prepared_database: PostgresDatabase
) -> None:
    running = start_cluster(tmp_path, prepared_database)
    workers = ServerProcess(running.site, name="workers", args=("--workers", "2")).start()
    try:
        slug = "sys-workers"
        running.site.create_channels(slug)
        subscribers = [Subscriber(f"{workers.url}/events/{slug}/") for _ in range(12)]
        for subscriber in subscribers:
            await subscriber.__aenter__()
            await subscriber.opened()
        pids = {line.split()[-1] for line in workers.log().splitlines() if "Started server process" in line}
        print(f"worker processes: {len(pids)}")
        assert len(pids) == 2
        sequence = await api.publish(running.a.url, running.key, slug, "to every worker")
        for subscriber in subscribers:
            assert ids([await subscriber.next_event()]) == [sequence]
        # SIGTERM: each worker ends its streams, and the whole server is gone within the
        # README's 2 s (the supervisor's exit walked its heap for 2-4 s before gc.freeze).
        started = time.monotonic()
        assert workers.stop(timeout=10) == 0, workers.log()
        stopped_in = time.monotonic() - started
        for subscriber in subscribers:
            last = (await subscriber.until_closed())[-1]
            assert (last.event, json.loads(last.data)["reason"]) == ("pushsite.close", "server shutting down")
            await subscriber.close()
        assert stopped_in < 2.0, f"serve --workers 2 took {stopped_in:.2f} s to stop"
    finally:
        workers.stop()
        running.stop()
        running.redis.stop()


async def test_group_commits_of_both_processes_store_each_publish_once_in_order(
    cluster: Cluster, prepared_database: PostgresDatabase
) -> None:
    """Issue 17: both processes batch concurrent publishes on one PostgreSQL; rows = 201s, no id twice, no gap.

    Some requests are sent to both processes at once with the same Idempotency-Key:
    one message between them, both answered with its id.
    """
    slugs = ["sys-group-a", "sys-group-b"]
    cluster.site.create_channels(*slugs)
    publishers, per_publisher = 8, 40
    headers = {"Authorization": f"Bearer {cluster.key}"}

    async def post(client: httpx.AsyncClient, url: str, slug: str, data: object, key: str) -> tuple[str, int]:
        response = await client.post(
            f"{url}/api/channels/{slug}/messages",
            json={"data": data},
            headers={**headers, "Idempotency-Key": key},
        )
        assert response.status_code == 201, response.text
        return slug, response.json()["id"]

    async def publisher(n: int) -> list[tuple[str, int]]:
        mine, other = (cluster.a, cluster.b) if n % 2 else (cluster.b, cluster.a)
        acknowledged: list[tuple[str, int]] = []
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(per_publisher):
                slug = slugs[(n + i) % 2] if n % 4 < 2 else slugs[0]
                data, key = {"p": n, "i": i}, f"group-{n}-{i}"
                if i % 8 == 0:
                    both = await asyncio.gather(
                        post(client, mine.url, slug, data, key), post(client, other.url, slug, data, key)
                    )
                    assert both[0] == both[1], "one Idempotency-Key, two messages"
                    acknowledged.append(both[0])
                else:
                    acknowledged.append(await post(client, mine.url, slug, data, key))
        return acknowledged

    answers = [
        pair for acked in await asyncio.gather(*(publisher(n) for n in range(publishers))) for pair in acked
    ]
    assert len(answers) == publishers * per_publisher
    assert len(set(answers)) == len(answers), "an id was acknowledged twice"
    with psycopg.connect(prepared_database.url) as connection:
        rows = connection.execute(
            "SELECT c.slug, m.sequence, m.data FROM events_message m"
            " JOIN events_channel c ON c.id = m.channel_id WHERE c.slug = ANY(%s)",
            [slugs],
        ).fetchall()
        last: dict[str, int] = dict(
            connection.execute(
                "SELECT slug, last_sequence FROM events_channel WHERE slug = ANY(%s)", [slugs]
            ).fetchall()
        )
    assert sorted((slug, sequence) for slug, sequence, _ in rows) == sorted(answers)  # rows = 201s
    for slug in slugs:
        assert sorted(sequence for s, sequence, _ in rows if s == slug) == list(range(1, last[slug] + 1))
    # Each publisher's messages are in the order it sent them, per channel.
    for n in range(publishers):
        for slug in slugs:
            sent = [
                data["i"]
                for s, _, data in sorted(rows, key=lambda row: row[1])
                if s == slug and data["p"] == n
            ]
            assert sent == sorted(sent)
