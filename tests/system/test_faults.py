"""Faults against two real processes, real PostgreSQL and a Redis this test controls (issue 15).

Each test prints what it measured and asserts what Pushsite guarantees: no
loss, no duplicates, and the bound the issue sets for that fault.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import signal
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.support.servers import ServerProcess
from tests.support.services import PostgresDatabase
from tests.support.sse_client import Subscriber, follow
from tests.support.waiting import eventually
from tests.system.conftest import Cluster, start_cluster

pytestmark = pytest.mark.system

HEALTH_BOUND_SECONDS = 1.0  # /healthz's own bound is 0.5 s per check, run side by side


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, prepared_database: PostgresDatabase
) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("faults"), prepared_database)
    yield running
    running.stop()
    if running.redis.process is not None and running.redis.process.poll() is None:
        os.kill(running.redis.process.pid, signal.SIGCONT)
    running.redis.stop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def check_exactly_once(
    name: str, acknowledged: list[int], received: list[int], unacknowledged: int = 0
) -> None:
    """Every acknowledged message once and in order; nothing twice. Print the counts."""
    counts = Counter(received)
    lost = sorted(set(acknowledged) - set(received))
    duplicated = sorted(seq for seq, n in counts.items() if n > 1)
    extra = sorted(set(received) - set(acknowledged))
    print(
        f"{name}: acknowledged={len(acknowledged)} received={len(received)} lost={len(lost)} "
        f"duplicated={len(duplicated)} unacknowledged-but-stored={len(extra)} in_order={received == sorted(received)}"
    )
    assert lost == [], f"{name} lost {lost[:10]}"
    assert duplicated == [], f"{name} duplicated {duplicated[:10]}"
    assert received == sorted(received), f"{name} out of order"
    # A publish that failed may still have committed (its answer was lost): only then.
    assert len(extra) <= unacknowledged, f"{name} received unannounced ids {extra[:10]}"


async def open_latency(url: str) -> float:
    """Seconds from asking for a stream to its pushsite.open event."""
    started = time.monotonic()
    async with Subscriber(url) as subscriber:
        assert subscriber.status == 200
        await subscriber.opened(timeout=10)
        return time.monotonic() - started


async def last_id(cluster: Cluster, slug: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{cluster.a.url}/api/channels/{slug}/messages?after=0&limit=1000")
    messages = response.json()["messages"]
    return int(messages[-1]["id"]) if messages else 0


async def test_steady_200_per_second_stream_opens_stay_fast(faults: Cluster) -> None:
    """10 s at 200 msg/s across both processes with subscribers on both: opens stay fast, nothing lost."""
    cluster = faults
    slug = "faults-steady"
    cluster.site.create_channels(slug)
    rate, seconds = 200, 10
    total = rate * seconds
    urls = [f"{server.url}/events/{slug}/" for server in (cluster.a, cluster.b) for _ in range(5)]
    connected = [asyncio.Event() for _ in urls]
    followers = [
        asyncio.create_task(follow([url], expect=total, timeout=60, connected=ready))
        for url, ready in zip(urls, connected, strict=True)
    ]
    async with asyncio.timeout(10):
        for ready in connected:
            await ready.wait()

    acknowledged: list[int] = []
    opens: list[float] = []
    publish_seconds: list[float] = []

    async def publisher(index: int, client: httpx.AsyncClient) -> None:
        # Eight publishers, each paced to rate/8 on its own schedule (no drift).
        server = (cluster.a, cluster.b)[index % 2]
        start = time.monotonic()
        for n in range(total // 8):
            delay = start + n * 8 / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
            began = time.monotonic()
            response = await client.post(
                f"{server.url}/api/channels/{slug}/messages",
                json={"data": {"p": index, "n": n}},
                headers={"Authorization": f"Bearer {cluster.key}"},
            )
            publish_seconds.append(time.monotonic() - began)
            assert response.status_code == 201, response.text
            acknowledged.append(int(response.json()["id"]))

    async def opener() -> None:
        deadline = time.monotonic() + seconds - 0.5
        n = 0
        while time.monotonic() < deadline:
            server = (cluster.a, cluster.b)[n % 2]
            n += 1
            opens.append(await open_latency(f"{server.url}/events/{slug}/"))
            await asyncio.sleep(0.1)  # pacing: ten opens a second

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=12)) as client:
        began = time.monotonic()
        await asyncio.gather(*(publisher(i, client) for i in range(8)), opener())
        elapsed = time.monotonic() - began
    received = await asyncio.gather(*followers)
    print(
        f"steady: {len(acknowledged)} messages in {elapsed:.1f} s ({len(acknowledged) / elapsed:.0f}/s), "
        f"{len(urls)} subscribers; stream opens n={len(opens)} p50={statistics.median(opens) * 1000:.1f} ms "
        f"p99={percentile(opens, 0.99) * 1000:.1f} ms max={max(opens) * 1000:.1f} ms; "
        f"publish p50={statistics.median(publish_seconds) * 1000:.1f} ms "
        f"p99={percentile(publish_seconds, 0.99) * 1000:.1f} ms"
    )
    for index, ids in enumerate(received):
        check_exactly_once(f"subscriber {index}", sorted(acknowledged), ids)
    for server in (cluster.a, cluster.b):
        metrics = await asyncio.to_thread(server.metrics)
        print(
            f"{server.name}: layer gaps filled from the database {metrics.get('pushsite_layer_gaps_total', 0):.0f}, "
            f"late {metrics.get('pushsite_layer_late_total', 0):.0f}, lost {metrics.get('pushsite_layer_lost_total', 0):.0f}"
        )
        # A healthy Redis loses nothing: the alertable counter stays at zero
        # whatever reordering between the two publishing processes did.
        assert metrics.get("pushsite_layer_lost_total", 0) == 0
    # The target is 50 ms on a quiet machine (bench: steady). Here the test's
    # own loop runs the load and parses 20,000 events, so its clock includes its own
    # lag: measured 120-570 ms at load average 5-10. The median must stay fast and
    # the p99 under a second, which still fails on the stalls the issue found (about
    # 2 s every ~5 s at 200 msg/s, and each open in a stall).
    assert statistics.median(opens) < 0.25
    assert percentile(opens, 0.99) < 1.0


async def churn(
    cluster: Cluster, database: PostgresDatabase, slug: str, *, idle_only: bool
) -> tuple[Counter[int], list[int], list[int]]:
    """4 publishers on both processes while PostgreSQL backends are killed every 0.3 s for 3 s.

    The statuses, the acknowledged ids, and the number of backends each kill ended.
    """
    stop = asyncio.Event()
    acknowledged: list[int] = []
    statuses: Counter[int] = Counter()
    kills: list[int] = []
    which = "AND state = 'idle'" if idle_only else ""

    def kill_backends() -> int:
        with psycopg.connect(database.admin_url, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = %s AND pid <> pg_backend_pid() {which}",
                (database.name,),
            ).fetchall()
        return len(rows)

    async def killer() -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            kills.append(await asyncio.to_thread(kill_backends))
            await asyncio.sleep(0.3)  # pacing of the fault
        stop.set()

    async def publisher(index: int, client: httpx.AsyncClient) -> None:
        server = (cluster.a, cluster.b)[index % 2]
        n = 0
        while not stop.is_set():
            n += 1
            response = await client.post(
                f"{server.url}/api/channels/{slug}/messages",
                json={"data": {"p": index, "n": n}},
                headers={"Authorization": f"Bearer {cluster.key}"},
            )
            statuses[response.status_code] += 1
            if response.status_code == 201:
                acknowledged.append(int(response.json()["id"]))
            else:
                await asyncio.sleep(0.05)  # a publisher's retry delay

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(killer(), *(publisher(i, client) for i in range(PUBLISHERS)))
    print(
        f"database churn ({'idle' if idle_only else 'all'} backends killed): {len(kills)} kills "
        f"({sum(kills)} backends), {sum(statuses.values())} publishes in 3 s: {dict(sorted(statuses.items()))}"
    )
    return statuses, acknowledged, kills


PUBLISHERS = 4


async def test_killed_database_connections_heal_without_503s(
    faults: Cluster, prepared_database: PostgresDatabase
) -> None:
    """Killed PostgreSQL backends are replaced on the next use, without sleeping: no outage, nothing lost."""
    cluster = faults
    slug = "faults-churn"
    # The replay below reads everything from the start: keep more than the two
    # churns can publish (the default keeps 1,000; a quiet machine publishes ~800
    # in them, and more since publishing no longer waits on the fan-out).
    cluster.site.shell(
        "from events.provisioning import upsert_channel\n"
        f"channel, _ = upsert_channel({slug!r}); channel.retention_count = 100_000; channel.save()\n"
    )
    urls = [f"{cluster.a.url}/events/{slug}/", f"{cluster.b.url}/events/{slug}/"]
    connected = [asyncio.Event() for _ in urls]
    followers = [
        asyncio.create_task(follow([url], expect=10**9, timeout=30, connected=ready))
        for url, ready in zip(urls, connected, strict=True)
    ]
    async with asyncio.timeout(10):
        for ready in connected:
            await ready.wait()
    # Idle pooled connections killed (a failover, a proxy, idle_session_timeout):
    # the next checkout replaces each one at once, so no publish fails.
    idle_statuses, idle_acknowledged, _ = await churn(cluster, prepared_database, slug, idle_only=True)
    # Every backend killed, in use or not: a publish whose own connection dies
    # mid-transaction fails (503, stored or rolled back, never twice); the rest go on.
    all_statuses, all_acknowledged, kills = await churn(cluster, prepared_database, slug, idle_only=False)
    acknowledged = idle_acknowledged + all_acknowledged
    failed = sum(all_statuses.values()) - all_statuses[201] + sum(idle_statuses.values()) - idle_statuses[201]

    expected = max(acknowledged)
    for follower in followers:
        follower.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    for url in urls:
        received: list[int] = []
        async with Subscriber(url, headers={"Last-Event-ID": "0"}) as subscriber:
            await subscriber.opened()
            while not received or received[-1] < expected:
                event = await subscriber.next_event(timeout=10)
                if event.event == "message":
                    received.append(json.loads(event.data)["id"])
        check_exactly_once(f"replay on {url}", sorted(acknowledged), received, failed)
    # Idle kills: a statement that finds its connection dead runs again on a
    # fresh one when that is safe (a SELECT, or a transaction's first
    # statement). Not an autocommit write, such as the API key's last-used
    # stamp (once a minute per process): at most one such 503 per process.
    assert set(idle_statuses) <= {201, 503}, idle_statuses
    assert idle_statuses[503] <= 2, idle_statuses
    assert set(all_statuses) <= {201, 503}, all_statuses
    # At most the publishes in flight when each kill landed, not an outage:
    # before the fix each killed pooled connection cost a 1-2 s sleep, and the
    # publishers managed ~10-20 publishes a second instead of hundreds.
    assert all_statuses[503] <= PUBLISHERS * len(kills), all_statuses
    assert all_statuses[201] >= 10 * all_statuses[503], all_statuses


FROZEN_PUBLISHERS = 6
# Twice PUSHSITE_LAYER_TIMEOUT_SECONDS: sends time out, and frames queued behind them go stale.
FROZEN_SECONDS = 4.0
ONSET_SECONDS = 0.2  # above the rate limiter's CACHE_SLOW_SECONDS


def metrics_text(server: ServerProcess) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=10).text


def metric_total(text: str, name: str) -> float:
    """The sum of a metric over all its labels, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_frozen_redis_costs_publishers_milliseconds_and_loses_nothing(faults: Cluster) -> None:
    """Redis stopped with SIGSTOP for 4 s under six publishers on both processes.

    Publishing does not wait on the broker: latency and throughput stay near what
    they were before the freeze. /healthz answers within its bound, naming the
    channel layer. Open streams keep heart-beating. After SIGCONT every published
    message reaches the subscribers on both processes once and in order, and the
    frames the fan-out could not send are counted (pushsite_fanout_dropped_total,
    pushsite_fanout_failures_total) and seen by the relays as lost by the layer
    (pushsite_layer_lost_total, the alertable signal).
    """
    cluster = faults
    slug = "faults-frozen"
    cluster.site.create_channels(slug)
    assert cluster.redis.process is not None
    received: dict[str, list[int]] = {}
    connected = [asyncio.Event(), asyncio.Event()]

    async def subscribe(url: str, ready: asyncio.Event) -> None:
        # One connection for the whole test: it must stay open and fed through the freeze.
        ids = received.setdefault(url, [])
        async with Subscriber(url) as subscriber:
            await subscriber.opened(10)
            ready.set()
            while True:
                event = await subscriber.next_event(timeout=30)
                if event.event == "message":
                    ids.append(json.loads(event.data)["id"])

    urls = [f"{cluster.a.url}/events/{slug}/", f"{cluster.b.url}/events/{slug}/"]
    subscribers = [
        asyncio.create_task(subscribe(url, ready)) for url, ready in zip(urls, connected, strict=True)
    ]
    async with asyncio.timeout(10):
        for ready in connected:
            await ready.wait()
    # An open stream on A, read chunk by chunk: when each came (heartbeats every 1 s).
    writes: list[float] = []
    watcher = await Subscriber(f"{cluster.a.url}/events/{slug}/").__aenter__()
    await watcher.opened()

    async def record_writes() -> None:
        while await watcher._read_more():
            writes.append(time.monotonic())

    reading = asyncio.create_task(record_writes())
    before = {server.name: await asyncio.to_thread(metrics_text, server) for server in (cluster.a, cluster.b)}

    acknowledged: list[int] = []
    # (started, seconds) of every publish, and its status.
    timings: list[tuple[float, float]] = []
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def publisher(index: int, client: httpx.AsyncClient) -> None:
        server = (cluster.a, cluster.b)[index % 2]
        n = 0
        while not stop.is_set():
            n += 1
            began = time.monotonic()
            response = await client.post(
                f"{server.url}/api/channels/{slug}/messages",
                json={"data": {"p": index, "n": n}},
                headers={"Authorization": f"Bearer {cluster.key}"},
            )
            timings.append((began, time.monotonic() - began))
            statuses[response.status_code] += 1
            if response.status_code == 201:
                acknowledged.append(int(response.json()["id"]))

    health: list[tuple[str, float, int, dict[str, object]]] = []
    limits = httpx.Limits(max_connections=FROZEN_PUBLISHERS + 4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        publishing = [asyncio.create_task(publisher(i, client)) for i in range(FROZEN_PUBLISHERS)]
        await asyncio.sleep(2)  # the healthy phase, to compare with
        os.kill(cluster.redis.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            await asyncio.sleep(1)  # let the first sends hang and time out
            for server in (cluster.a, cluster.b):
                began = time.monotonic()
                answer = await client.get(f"{server.url}/healthz")
                health.append((server.name, time.monotonic() - began, answer.status_code, answer.json()))
            await asyncio.sleep(max(0.0, frozen_at + FROZEN_SECONDS - time.monotonic()))
        finally:
            os.kill(cluster.redis.process.pid, signal.SIGCONT)
            thawed_at = time.monotonic()
        await asyncio.sleep(2)  # after the freeze
        stop.set()
        await asyncio.gather(*publishing)

    first = min(began for began, _ in timings)
    # Finished before the freeze; in flight when it began or started just after it;
    # started during it. Some publishes wait out the cache's 1 s socket timeout: those
    # whose rate-limit call was already waiting on Redis before the others could tell
    # that it hangs (events/access/ratelimit.py), one per publisher at most. The publish
    # rate is reserved in blocks (issue 17), so that call comes when a process's block
    # runs out: at the onset or later in the freeze.
    healthy = [seconds for began, seconds in timings if began + seconds < frozen_at]
    onset = [
        seconds
        for began, seconds in timings
        if began + seconds >= frozen_at and began < frozen_at + ONSET_SECONDS
    ]
    frozen = [seconds for began, seconds in timings if frozen_at + ONSET_SECONDS <= began < thawed_at]
    healthy_rate = len(healthy) / (frozen_at - first)
    frozen_rate = len(frozen) / (thawed_at - frozen_at - ONSET_SECONDS)
    print(
        f"frozen Redis, {FROZEN_PUBLISHERS} publishers: {dict(statuses)}; "
        f"before: {len(healthy)} publishes ({healthy_rate:.0f}/s) "
        f"p50={statistics.median(healthy) * 1000:.1f} ms p99={percentile(healthy, 0.99) * 1000:.1f} ms; "
        f"at the onset: {len(onset)} publishes, {', '.join(f'{s * 1000:.0f}' for s in sorted(onset))} ms; "
        f"frozen: {len(frozen)} publishes ({frozen_rate:.0f}/s) "
        f"p50={statistics.median(frozen) * 1000:.1f} ms p95={percentile(frozen, 0.95) * 1000:.1f} ms "
        f"p99={percentile(frozen, 0.99) * 1000:.1f} ms max={max(frozen) * 1000:.0f} ms"
    )
    for name, seconds, status, body in health:
        print(f"/healthz on {name} while frozen: {status} in {seconds * 1000:.0f} ms: {body}")

    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await watcher.close()
    # Nothing on the tick waits on the frozen layer: the open stream kept heart-beating.
    during = [frozen_at, *(t for t in writes if frozen_at < t < thawed_at), thawed_at]
    longest = max(later - earlier for earlier, later in itertools.pairwise(during))
    print(f"frozen for {thawed_at - frozen_at:.1f} s: the open stream's longest silence {longest:.2f} s")

    expected = max(acknowledged)

    async def last_received() -> list[int]:
        return [ids[-1] if ids else 0 for ids in received.values()]

    await eventually(
        last_received,
        lambda lasts: min(lasts) >= expected,
        within=20,
        what="the last acknowledged id on both subscribers",
    )
    failed = sum(statuses.values()) - statuses[201]
    for url, ids in received.items():
        check_exactly_once(f"subscriber on {url}", sorted(acknowledged), ids, failed)

    # The counters: the frames the fan-out never sent, and the relays' view of them.
    # A dropped frame is never sent, so each relay reads it from the database and,
    # LAYER_LOSS_SECONDS later, counts it as lost by the layer: the alertable signal.
    async def counts() -> dict[str, dict[str, float]]:
        seen: dict[str, dict[str, float]] = {}
        for server in (cluster.a, cluster.b):
            after = await asyncio.to_thread(metrics_text, server)
            seen[server.name] = {
                name: metric_total(after, name) - metric_total(before[server.name], name)
                for name in (
                    "pushsite_fanout_dropped_total",
                    "pushsite_fanout_failures_total",
                    "pushsite_layer_lost_total",
                    "pushsite_layer_late_total",
                )
            }
        return seen

    def every_drop_seen_as_lost(seen: dict[str, dict[str, float]]) -> bool:
        dropped = sum(each["pushsite_fanout_dropped_total"] for each in seen.values())
        return all(each["pushsite_layer_lost_total"] >= dropped for each in seen.values())

    # The subscribers stay: a feed left without streams is closed, and what it awaited with it.
    seen = await eventually(counts, every_drop_seen_as_lost, within=15, what="lost counts on A and B")
    for task in subscribers:
        task.cancel()
    await asyncio.gather(*subscribers, return_exceptions=True)
    for name, each in seen.items():
        print(f"{name} during the freeze: {each}")
        assert each["pushsite_fanout_failures_total"] >= 1
        assert each["pushsite_fanout_dropped_total"] >= 1

    assert statuses[201] == sum(statuses.values()), statuses
    for name, seconds, status, body in health:
        assert status == 503, (name, body)
        assert body["sick"] == ["channel_layer"], body
        assert body["database"] == "ok", body
        assert str(body["channel_layer"]).startswith("error"), body
        assert seconds < HEALTH_BOUND_SECONDS, (name, seconds)
    assert longest < 3.0  # heartbeats every 1 s, checked on the 1 s tick: 2 s at worst, plus load
    # Before this change, each publish waited on the layer: 2 publishes/s in this test
    # (47/s before the freeze), p99 1.9 s. The bounds follow the healthy phase because
    # the machine running the test is shared and loaded (publishes take 30-400 ms
    # with Redis healthy); on a quiet one the p99 bound is 100 ms.
    assert frozen_rate >= 0.3 * healthy_rate
    # At most one publish per publisher waits out the cache's timeout; the others do not wait.
    assert sum(1 for seconds in onset + frozen if seconds > 0.5) <= FROZEN_PUBLISHERS
    quick = [seconds for seconds in frozen if seconds <= 0.5]
    assert percentile(quick, 0.99) < min(1.0, max(0.1, 3 * percentile(healthy, 0.99)))
    assert max(onset + frozen) < 2.0


async def send_and_reset(port: int, slug: str, key: str, idempotency_key: str, body: bytes) -> None:
    """POST a whole publish, then reset the connection (linger 0) without reading the answer."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /api/channels/{slug}/messages HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            f"Idempotency-Key: {idempotency_key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_publish_retried_with_its_idempotency_key_after_a_reset_is_stored_once(
    faults: Cluster,
) -> None:
    """The answer is lost to a connection reset; the retry (to the other process) gets the original."""
    cluster = faults
    slug = "faults-idempotent"
    cluster.site.create_channels(slug)
    auth = {"Authorization": f"Bearer {cluster.key}"}
    rounds = 10
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=10) as client:

        async def stored(n: int) -> list[int]:
            response = await client.get(f"{cluster.a.url}/api/channels/{slug}/messages?after=0&limit=1000")
            return [m["id"] for m in response.json()["messages"] if m["data"] == {"n": n}]

        for n in range(rounds):
            first, other = (cluster.a, cluster.b)[n % 2], (cluster.b, cluster.a)[n % 2]
            key = f"reset-{n}"
            body = json.dumps({"data": {"n": n}}).encode()
            await send_and_reset(first.port, slug, cluster.key, key, body)
            # Half the rounds: the answer was lost after the publish committed.
            # The others: the retry races the first attempt, or finds it never stored.
            if n % 2 == 0:
                await eventually(functools.partial(stored, n), bool, within=10, what=f"publish {n} stored")
            retry = await client.post(
                f"{other.url}/api/channels/{slug}/messages",
                content=body,
                headers={**auth, "Content-Type": "application/json", "Idempotency-Key": key},
            )
            assert retry.status_code == 201, retry.text
            replayed = retry.headers.get("idempotent-replayed") == "true"
            outcomes["replayed" if replayed else "stored by the retry"] += 1
            if n % 2 == 0:
                assert replayed, f"round {n}: the committed publish was not replayed"
            ids = await eventually(functools.partial(stored, n), bool, within=10, what=f"publish {n} stored")
            assert ids == [retry.json()["id"]], (
                f"round {n}: stored {ids}, retry answered {retry.json()['id']}"
            )

        # Racing retries on both processes at once (PostgreSQL, two connection pools).
        racers = 16
        body = json.dumps({"data": {"n": "race"}}).encode()
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{(cluster.a, cluster.b)[i % 2].url}/api/channels/{slug}/messages",
                    content=body,
                    headers={**auth, "Content-Type": "application/json", "Idempotency-Key": "race"},
                )
                for i in range(racers)
            )
        )
    statuses = Counter(answer.status_code for answer in answers)
    replays = sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers)
    raced = await last_id(cluster, slug)
    print(
        f"idempotent retries after a reset: {rounds} rounds, {dict(outcomes)}; "
        f"{racers} racing retries on two processes: statuses {dict(statuses)}, {replays} replayed"
    )
    assert statuses == {201: racers}
    assert replays == racers - 1
    assert {answer.json()["id"] for answer in answers} == {raced}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{cluster.a.url}/api/channels/{slug}/messages?after=0&limit=1000")
    messages = response.json()["messages"]
    assert len(messages) == rounds + 1, [m["data"] for m in messages]
