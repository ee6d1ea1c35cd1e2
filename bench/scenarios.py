"""The benchmark scenarios, each bounded in size and time.

(a) latency, (b) fan-out, (c) idle connections, (d) publish round trip,
(e) cross-process over Redis, (f) a slow reader (Pushsite's queue bound), (g) the
publish roads, and (h) steady load over two processes while new streams keep
opening (issue 15).
Each returns a plain dict of results (JSON-ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.servers import ROOT

from .loadgen import Crowd, Subscriber, Tally
from .publisher import Publisher, PublishLog
from .servers import SLUG, Server, realtime_prefix

HOST = "127.0.0.1"
STREAM_PATH = f"/events/{SLUG}/"

# Phase numbers in the payload: a frame from an earlier phase counts as stale.
PHASE_LATENCY, PHASE_FANOUT, PHASE_REACH, PHASE_PUBLISH, PHASE_CROSS, PHASE_WARMUP = 1, 2, 3, 4, 5, 9
PHASE_SLOW = 6
PHASE_STEADY = 7
STEADY_PUBLISH_CONNECTIONS = 4

Progress = Callable[[str], None]


@dataclass
class Sizes:
    subscribers: int = 1000
    latency_messages: int = 200
    latency_rate: float = 20.0
    burst_messages: int = 500
    connections: int = 10_000
    round_trips: int = 300
    cross_messages: int = 200
    # (g) publish roads: interleaved rounds of sequential publishes per road.
    path_rounds: int = 5
    path_publishes: int = 300
    # (h): subscribers split over the two processes, messages at steady_rate.
    steady_subscribers: int = 40
    steady_messages: int = 2000
    steady_rate: float = 200.0
    # (i) reconnect storm (bench/storm.py): clients back at once, messages missed meanwhile.
    storm_clients: int = 10_000
    storm_messages: int = 20
    storm_concurrency: int = 1000
    # Seconds without a new delivery after which a phase gives up on the rest.
    quiet_seconds: float = 5.0
    # Hard cap on waiting for one phase's deliveries after its last publish.
    max_wait_seconds: float = 120.0


QUICK = Sizes(
    subscribers=200,
    latency_messages=60,
    burst_messages=100,
    connections=1000,
    round_trips=100,
    cross_messages=60,
    path_rounds=3,
    path_publishes=100,
    steady_messages=600,
    storm_clients=500,
    storm_messages=5,
    quiet_seconds=3.0,
    max_wait_seconds=30.0,
)


def ms(nanoseconds: float) -> float:
    return round(nanoseconds / 1e6, 2)


def percentile(values: list[int] | list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return float(ordered[index])


def latency_summary(values_ns: list[int]) -> dict[str, float]:
    return {
        "p50_ms": ms(percentile(values_ns, 0.50)),
        "p99_ms": ms(percentile(values_ns, 0.99)),
        "max_ms": ms(max(values_ns)) if values_ns else float("nan"),
    }


async def wait_for(tally: Tally, sizes: Sizes, progress: Progress, label: str) -> bool:
    """Until every expected delivery arrived, or none came for ``quiet_seconds``; True if all came."""
    deadline = time.monotonic() + sizes.max_wait_seconds
    seen, quiet_since = -1, time.monotonic()
    while not tally.done.done():
        now = time.monotonic()
        if tally.deliveries != seen:
            seen, quiet_since = tally.deliveries, now
        elif now - quiet_since > sizes.quiet_seconds or now > deadline:
            return False
        progress(f"{label}: {tally.deliveries:,}/{tally.expected:,} deliveries")
        await asyncio.wait([tally.done], timeout=0.25)
    return True


def integrity(tally: Tally, crowd: Crowd, messages: int, *, complete: bool) -> dict[str, object]:
    return {
        "deliveries": tally.deliveries,
        "expected": tally.expected,
        "lost": crowd.missing(messages),
        "duplicates": tally.duplicates,
        "reordered": tally.reordered,
        "stale": tally.stale,
        "disconnected": crowd.lost_connections(),
        "complete": complete,
    }


async def open_crowd(
    server: Server, count: int, progress: Progress, label: str, *, receive_buffer: int | None = None
) -> tuple[Crowd, float]:
    crowd = Crowd(HOST, server.port, STREAM_PATH)
    seconds = await crowd.open(
        count,
        on_progress=lambda done, total: progress(f"{label}: opening {done:,}/{total:,} streams"),
        receive_buffer=receive_buffer,
    )
    if crowd.failures:
        raise RuntimeError(f"{len(crowd.failures)} streams failed to open, e.g. {crowd.failures[0]}")
    return crowd, seconds


async def publish_elsewhere(
    server: Server, phase: int, count: int, rate: float, on_tick: Callable[[], None], connections: int = 1
) -> PublishLog:
    """Run bench/publisher.py in a process of its own (on this process's CPU, real-time priority).

    In this process a publish's answer would wait behind the subscribers' work
    of reading the previous message, and one publisher would then pace the
    burst at the client's speed instead of the server's.
    """
    env = dict(os.environ, BENCH_API_KEY=server.api_key, PYTHONPATH=str(ROOT))
    command = [*realtime_prefix(), sys.executable, "-m", "bench.publisher", "--port", str(server.port)]
    command += ["--slug", SLUG]
    command += ["--phase", str(phase), "--count", str(count), "--rate", str(rate)]
    command += ["--connections", str(connections)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    finished = asyncio.ensure_future(process.communicate())
    while not finished.done():
        on_tick()
        await asyncio.wait([finished], timeout=0.25)
    out, err = finished.result()
    if process.returncode != 0:
        raise RuntimeError(f"the publisher failed: {err.decode(errors='replace')[-2000:]}")
    return PublishLog(**json.loads(out))


async def latency_and_fanout(server: Server, sizes: Sizes, progress: Progress) -> dict[str, object]:
    """(a) paced latency, then (b) a burst, on the same ``sizes.subscribers`` streams."""
    crowd, _ = await open_crowd(server, sizes.subscribers, progress, "(a) latency")
    try:
        await asyncio.sleep(1.0)  # let every subscription settle
        results: dict[str, object] = {}

        tally = Tally(PHASE_LATENCY, sizes.subscribers * sizes.latency_messages)
        crowd.start_phase(tally)
        log = await publish_elsewhere(
            server,
            PHASE_LATENCY,
            sizes.latency_messages,
            sizes.latency_rate,
            lambda: progress(f"(a) latency: {tally.deliveries:,}/{tally.expected:,} deliveries"),
        )
        complete = await wait_for(tally, sizes, progress, "(a) latency")
        results["latency"] = {
            "subscribers": sizes.subscribers,
            "messages": sizes.latency_messages,
            "rate_per_s": sizes.latency_rate,
            **latency_summary(list(tally.latencies_ns)),
            "publish_p50_ms": ms(percentile(log.round_trips_ns, 0.5)),
            **integrity(tally, crowd, sizes.latency_messages, complete=complete),
        }
        await asyncio.sleep(0.5)

        tally = Tally(PHASE_FANOUT, sizes.subscribers * sizes.burst_messages)
        crowd.start_phase(tally)
        server_cpu, client_cpu, wall = server.cpu_seconds(), time.process_time(), time.perf_counter()
        log = await publish_elsewhere(
            server,
            PHASE_FANOUT,
            sizes.burst_messages,
            0,
            lambda: progress(f"(b) fan-out: {tally.deliveries:,}/{tally.expected:,} deliveries"),
        )
        complete = await wait_for(tally, sizes, progress, "(b) fan-out")
        # CPU over the delivery window only (not the quiet wait after a loss).
        end_ns = tally.last_ns or time.time_ns()
        window = max(1e-9, (end_ns - log.started_ns) / 1e9)
        busy_wall = time.perf_counter() - wall
        server_seconds = server.cpu_seconds() - server_cpu
        results["fanout"] = {
            "subscribers": sizes.subscribers,
            "messages": sizes.burst_messages,
            "seconds": round(window, 3),
            "deliveries_per_s": round(tally.deliveries / window),
            "publish_seconds": round((log.finished_ns - log.started_ns) / 1e9, 3),
            "server_cpu_pct": round(100 * server_seconds / busy_wall),
            # Deliveries per second of server CPU: what the server does with a
            # core of its own, even when other work on the machine took part of it.
            "deliveries_per_cpu_s": round(tally.deliveries / max(server_seconds, 1e-9)),
            "client_cpu_pct": round(100 * (time.process_time() - client_cpu) / busy_wall),
            **latency_summary(list(tally.latencies_ns)),
            **integrity(tally, crowd, sizes.burst_messages, complete=complete),
        }
        return results
    finally:
        await crowd.close()


async def connections(server: Server, sizes: Sizes, progress: Progress) -> dict[str, object]:
    """(c) many idle streams: time to open, memory per stream, one message to all."""
    # Warm-up: first requests import and cache things a baseline must include.
    warm, _ = await open_crowd(server, 20, progress, "(c) connections warm-up")
    publisher = Publisher(HOST, server.port, SLUG, server.api_key)
    try:
        for number in range(1, 4):
            await publisher.publish(PHASE_WARMUP, number)
        await asyncio.sleep(0.5)
        await warm.close()
        await asyncio.sleep(1.5)
        rss_before = server.rss_kib()

        cpu_before = server.cpu_seconds()
        crowd, open_seconds = await open_crowd(server, sizes.connections, progress, "(c) connections")
        # Server CPU per open: what compares when neighbours take the core (wall time does not).
        open_cpu = server.cpu_seconds() - cpu_before
        try:
            await asyncio.sleep(2.0)  # idle, as they would be
            rss_after = server.rss_kib()
            tally = Tally(PHASE_REACH, sizes.connections)
            crowd.start_phase(tally)
            reach_cpu = server.cpu_seconds()
            _, round_trip = await publisher.publish(PHASE_REACH, 1)
            complete = await wait_for(tally, sizes, progress, "(c) one message to all")
            # Server CPU for the publish and its deliveries: what compares when neighbours
            # take the core (the wall time above then measures mostly the scheduler).
            reach_cpu = server.cpu_seconds() - reach_cpu
            return {
                "connections": sizes.connections,
                "open_seconds": round(open_seconds, 2),
                "opens_per_s": round(sizes.connections / max(open_seconds, 1e-9)),
                "cpu_us_per_open": round(open_cpu * 1e6 / sizes.connections),
                "rss_before_kib": rss_before,
                "rss_after_kib": rss_after,
                "kib_per_connection": round((rss_after - rss_before) / sizes.connections, 2),
                "reach_all_ms": ms(max(tally.latencies_ns)) if tally.latencies_ns else None,
                "reach_p50_ms": ms(percentile(list(tally.latencies_ns), 0.5)),
                "reach_server_cpu_ms": round(reach_cpu * 1000, 1),
                "publish_ms": ms(round_trip),
                **integrity(tally, crowd, 1, complete=complete),
            }
        finally:
            await crowd.close()
    finally:
        await publisher.close()


async def publish_round_trip(server: Server, sizes: Sizes, progress: Progress) -> dict[str, object]:
    """(d) sequential POSTs on one keep-alive connection, no subscribers."""
    publisher = Publisher(HOST, server.port, SLUG, server.api_key)
    try:
        for number in range(1, 21):  # warm-up
            await publisher.publish(PHASE_WARMUP, number)
        round_trips: list[int] = []
        for number in range(1, sizes.round_trips + 1):
            _, round_trip = await publisher.publish(PHASE_PUBLISH, number)
            round_trips.append(round_trip)
            if number % 20 == 0:
                progress(f"(d) publish: {number}/{sizes.round_trips}")
        return {
            "publishes": sizes.round_trips,
            "p50_ms": ms(percentile(round_trips, 0.5)),
            "p99_ms": ms(percentile(round_trips, 0.99)),
            "mean_ms": ms(statistics.fmean(round_trips)),
        }
    finally:
        await publisher.close()


# The publish roads of (g): headers added to an API-key publish. A cookie sends
# it through Django's middleware and view instead of the fast path.
PUBLISH_ROADS: dict[str, dict[str, str]] = {"key": {}, "django": {"Cookie": "bench=1"}}


async def _publish_round(server: Server, road: str, count: int) -> tuple[list[int], dict[str, float]]:
    """``count`` sequential publishes on one keep-alive connection, after a warm-up."""
    publisher = Publisher(HOST, server.port, SLUG, server.api_key, headers=PUBLISH_ROADS[road])
    try:
        for number in range(1, 21):
            await publisher.publish(PHASE_WARMUP, number)
        cpu_before = server.cpu_seconds()
        started = time.perf_counter_ns()
        round_trips = [(await publisher.publish(PHASE_PUBLISH, number))[1] for number in range(1, count + 1)]
        wall_ns = time.perf_counter_ns() - started
        cpu_seconds = server.cpu_seconds() - cpu_before
    finally:
        await publisher.close()
    return round_trips, {
        "publishes_per_s": count / wall_ns * 1e9,
        "cpu_ms_per_publish": cpu_seconds * 1000 / count,
        "p50_ms": ms(percentile(round_trips, 0.5)),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


async def publish_paths(
    servers: dict[str, Server], runs: list[tuple[str, str]], sizes: Sizes, progress: Progress
) -> dict[str, object]:
    """(g) stored publish round trips and publishes/s of each (server, road), in interleaved rounds.

    Every ratio compares two roads measured in the same round, against the first
    run (the reference); the spread is over rounds. The order of the roads turns
    by one each round, so none always goes first.
    """
    labels = [f"{server}/{road}" for server, road in runs]
    per_round: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    round_trips: dict[str, list[int]] = {label: [] for label in labels}
    for number in range(sizes.path_rounds):
        turn = number % len(runs)
        for server_name, road in runs[turn:] + runs[:turn]:
            label = f"{server_name}/{road}"
            progress(f"(g) publish roads: round {number + 1}/{sizes.path_rounds}, {label}")
            trips, measured = await _publish_round(servers[server_name], road, sizes.path_publishes)
            round_trips[label].extend(trips)
            per_round[label].append(measured)
    reference = labels[0]
    summary: dict[str, object] = {}
    for label in labels:
        rounds = per_round[label]
        summary[label] = {
            "p50_ms": ms(percentile(round_trips[label], 0.5)),
            "p99_ms": ms(percentile(round_trips[label], 0.99)),
            "publishes_per_s": _spread([r["publishes_per_s"] for r in rounds]),
            "cpu_ms_per_publish": _spread([r["cpu_ms_per_publish"] for r in rounds]),
            "p50_vs_reference": _spread(
                [r["p50_ms"] / ref["p50_ms"] for r, ref in zip(rounds, per_round[reference], strict=True)]
            ),
            "publishes_per_s_vs_reference": _spread(
                [
                    r["publishes_per_s"] / ref["publishes_per_s"]
                    for r, ref in zip(rounds, per_round[reference], strict=True)
                ]
            ),
            "cpu_vs_reference": _spread(
                [
                    r["cpu_ms_per_publish"] / ref["cpu_ms_per_publish"]
                    for r, ref in zip(rounds, per_round[reference], strict=True)
                    if ref["cpu_ms_per_publish"] > 0
                ]
                or [float("nan")]
            ),
        }
    return {
        "reference": reference,
        "rounds": sizes.path_rounds,
        "publishes_per_round": sizes.path_publishes,
        "roads": summary,
        "per_round": per_round,
    }


async def cross_process(
    publishing: Server, subscribed: Server, sizes: Sizes, progress: Progress
) -> dict[str, object]:
    """(e) publish on one process, subscribers on another, through the channel layer."""
    crowd, _ = await open_crowd(subscribed, sizes.subscribers, progress, "(e) cross-process")
    try:
        await asyncio.sleep(1.0)
        tally = Tally(PHASE_CROSS, sizes.subscribers * sizes.cross_messages)
        crowd.start_phase(tally)
        await publish_elsewhere(
            publishing,
            PHASE_CROSS,
            sizes.cross_messages,
            sizes.latency_rate,
            lambda: progress(f"(e) cross-process: {tally.deliveries:,}/{tally.expected:,} deliveries"),
        )
        complete = await wait_for(tally, sizes, progress, "(e) cross-process")
        return {
            "subscribers": sizes.subscribers,
            "messages": sizes.cross_messages,
            "rate_per_s": sizes.latency_rate,
            **latency_summary(list(tally.latencies_ns)),
            **integrity(tally, crowd, sizes.cross_messages, complete=complete),
        }
    finally:
        await crowd.close()


async def slow_reader(server: Server, sizes: Sizes, progress: Progress) -> dict[str, object]:
    """(f) one client stops reading during a burst of large messages: memory and the others."""
    readers, _ = await open_crowd(server, 50, progress, "(f) slow reader")
    stalled, _ = await open_crowd(server, 1, progress, "(f) slow reader", receive_buffer=16384)
    staller: Subscriber = stalled.subscribers[0]
    assert staller.transport is not None
    staller.transport.pause_reading()
    publisher = Publisher(HOST, server.port, SLUG, server.api_key)
    messages = 1000
    padding = "x" * 16000
    try:
        await asyncio.sleep(0.5)
        rss_before = server.rss_kib()
        tally = Tally(PHASE_SLOW, 50 * messages, keep_latencies=False)
        readers.start_phase(tally)
        peak = rss_before
        for number in range(1, messages + 1):
            await publisher.publish(PHASE_SLOW, number, padding=padding)
            if number % 100 == 0:
                peak = max(peak, server.rss_kib())
                progress(f"(f) slow reader: sent {number}/{messages}")
        complete = await wait_for(tally, sizes, progress, "(f) slow reader")
        peak = max(peak, server.rss_kib())
        # A paused transport does not notice the server closing it: read again
        # (the kernel's buffer drains) and see whether the stream ends.
        staller.transport.resume_reading()
        for _ in range(20):
            if staller.lost_connection:
                break
            await asyncio.sleep(0.1)
        return {
            "messages": messages,
            "message_bytes": len(padding) + 200,
            "rss_growth_kib": peak - rss_before,
            "stalled_reader_evicted": staller.lost_connection,
            "readers_lost": readers.missing(messages),
            "readers_complete": complete,
        }
    finally:
        await publisher.close()
        await readers.close()
        await stalled.close()


async def open_latency_ns(server: Server) -> int:
    """Nanoseconds from connecting to a new stream to its ``pushsite.open`` event."""
    started = time.perf_counter_ns()
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(
            f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        received = b""
        async with asyncio.timeout(10):
            while b"pushsite.open" not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError(f"the stream closed before it opened: {received[:200]!r}")
                received += chunk
        return time.perf_counter_ns() - started
    finally:
        writer.close()


async def steady(publishing: Server, other: Server, sizes: Sizes, progress: Progress) -> dict[str, object]:
    """(h) ``steady_rate`` msg/s published on one process, subscribers on both, new streams opening.

    The issue 15 target: stream opens p99 < 50 ms and delivery p99 < 100 ms
    while bookkeeping (census, presence, sweeps) runs on every tick.
    """
    half = sizes.steady_subscribers // 2
    crowds = [
        (await open_crowd(publishing, half, progress, "(h) steady"))[0],
        (await open_crowd(other, sizes.steady_subscribers - half, progress, "(h) steady"))[0],
    ]
    try:
        await asyncio.sleep(1.0)  # let every subscription settle
        tallies = [Tally(PHASE_STEADY, len(crowd.subscribers) * sizes.steady_messages) for crowd in crowds]
        for crowd, tally in zip(crowds, tallies, strict=True):
            crowd.start_phase(tally)
        opens: list[int] = []
        # When each slow open (over 50 ms) started, in seconds into the phase: a
        # periodic job that stalls opening shows up as a period here.
        slow_opens: list[tuple[float, float]] = []
        began = time.monotonic()
        stop = asyncio.Event()

        async def open_streams() -> None:
            # Ten new streams a second, alternating between the processes.
            number = 0
            while not stop.is_set():
                at = time.monotonic() - began
                opens.append(await open_latency_ns((publishing, other)[number % 2]))
                if opens[-1] > 50_000_000:
                    slow_opens.append((round(at, 2), ms(opens[-1])))
                number += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)

        opener = asyncio.ensure_future(open_streams())
        try:
            log = await publish_elsewhere(
                publishing,
                PHASE_STEADY,
                sizes.steady_messages,
                sizes.steady_rate,
                lambda: progress(
                    f"(h) steady: {sum(t.deliveries for t in tallies):,}/"
                    f"{sum(t.expected for t in tallies):,} deliveries, {len(opens)} opens"
                ),
                # Four connections, so the publisher keeps the rate when one
                # answer takes longer than 1/rate on a busy machine.
                connections=STEADY_PUBLISH_CONNECTIONS,
            )
        finally:
            stop.set()
            await opener
        complete = True
        for tally in tallies:
            complete = await wait_for(tally, sizes, progress, "(h) steady") and complete
        latencies = [value for tally in tallies for value in tally.latencies_ns]
        lost = sum(crowd.missing(sizes.steady_messages) for crowd in crowds)
        return {
            "subscribers": sizes.steady_subscribers,
            "messages": sizes.steady_messages,
            "rate_per_s": sizes.steady_rate,
            # What the publisher achieved: a paced publisher falls behind when
            # each answer takes longer than 1/rate.
            "achieved_rate_per_s": round(
                sizes.steady_messages / max(1e-9, (log.finished_ns - log.started_ns) / 1e9), 1
            ),
            "publish_p50_ms": ms(percentile(log.round_trips_ns, 0.5)),
            "publish_p99_ms": ms(percentile(log.round_trips_ns, 0.99)),
            "opens": len(opens),
            "open_p50_ms": ms(percentile(opens, 0.5)),
            "open_p99_ms": ms(percentile(opens, 0.99)),
            "open_max_ms": ms(max(opens)) if opens else None,
            "slow_opens_at_s_ms": slow_opens,
            **latency_summary(latencies),
            "deliveries": sum(tally.deliveries for tally in tallies),
            "expected": sum(tally.expected for tally in tallies),
            "lost": lost,
            "duplicates": sum(tally.duplicates for tally in tallies),
            # Overlapping publishes store messages in another order than their
            # numbers: not a delivery fault (ids are in order), so not "reordered".
            "numbers_out_of_publish_order": sum(tally.reordered for tally in tallies),
            "stale": sum(tally.stale for tally in tallies),
            "disconnected": sum(crowd.lost_connections() for crowd in crowds),
            "complete": complete,
        }
    finally:
        for crowd in crowds:
            await crowd.close()
