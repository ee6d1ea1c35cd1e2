"""(h) A reconnect storm: every client back at once after a restart, with messages published meanwhile.

``sizes.storm_clients`` streams are open and caught up; the server stops (SIGTERM);
``sizes.storm_messages`` are stored while it is down (as another process would);
the server starts again and every client reconnects at once with ``Last-Event-ID``.
Measured: seconds until every client has every missed message, and how many were
lost or duplicated. Pushsite only (the reference server stores nothing to resume from).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from tests.support.servers import ROOT

from .loadgen import Crowd, Tally
from .publisher import Publisher
from .scenarios import HOST, STREAM_PATH, Progress, Sizes, integrity, open_crowd, wait_for
from .servers import SLUG, PushsiteDeployment

PHASE_BEFORE, PHASE_STORM = 7, 8


async def reconnect_storm(
    deployment: PushsiteDeployment,
    sizes: Sizes,
    progress: Progress,
    cpu: int | None,
    *,
    name: str = "pushsite-storm",
    root: Path = ROOT,
) -> dict[str, object]:
    """The storm against the Pushsite at ``root`` (another checkout's, for an A/B run)."""
    server = deployment.server(name, cpu=cpu, root=root)
    clients, missed = sizes.storm_clients, sizes.storm_messages
    server.start()
    try:
        opening_cpu = server.cpu_seconds()
        crowd, _ = await open_crowd(server, clients, progress, "(h) storm: before")
        # For comparison: the CPU of opening the same number of live streams (no cursor: the directory).
        opening_cpu = server.cpu_seconds() - opening_cpu
        tally = Tally(PHASE_BEFORE, clients, keep_latencies=False)
        crowd.start_phase(tally)
        publisher = Publisher(HOST, server.port, SLUG, server.api_key)
        try:
            stored, _ = await publisher.publish(PHASE_BEFORE, 1)
        finally:
            await publisher.close()
        if not await wait_for(tally, sizes, progress, "(h) storm: before"):
            raise RuntimeError("not every client had the last message before the restart")
        last_event_id = str(stored["id"])
        progress("(h) storm: restarting the server")
        server.stop()
        await crowd.close()  # their connections are gone with the process
        payloads = [json.dumps({"p": PHASE_STORM, "n": n, "t": time.time_ns()}) for n in range(1, missed + 1)]
        await asyncio.to_thread(
            deployment.site.shell,
            "import json\nfrom events.publish.store import store_message\n"
            f"for p in {payloads!r}: store_message({SLUG!r}, json.loads(p))\n",
        )
        server.start()

        storm = Crowd(HOST, server.port, STREAM_PATH)
        storm.request = storm.request.replace(
            b"\r\n\r\n", f"\r\nLast-Event-ID: {last_event_id}\r\n\r\n".encode(), 1
        )
        tally = Tally(PHASE_STORM, clients * missed, keep_latencies=False)
        storm.tally = tally  # replay arrives with the first frames
        started, cpu_before = time.perf_counter(), server.cpu_seconds()
        await storm.open(
            clients,
            concurrency=sizes.storm_concurrency,
            on_progress=lambda done, total: progress(
                f"(h) storm: {done:,}/{total:,} back, {tally.deliveries:,}/{tally.expected:,} deliveries"
            ),
        )
        complete = await wait_for(tally, sizes, progress, "(h) storm: catching up")
        seconds = time.perf_counter() - started
        # Server CPU from the first reconnect to the last delivery (load-robust, unlike the wall time).
        cpu_used = server.cpu_seconds() - cpu_before
        try:
            return {
                "clients": clients,
                "missed_messages": missed,
                "concurrency": sizes.storm_concurrency,
                "failed_to_reconnect": len(storm.failures),
                "all_back_and_caught_up_s": round(seconds, 2),
                "server_cpu_s": round(cpu_used, 2),
                "server_cpu_ms_per_client": round(cpu_used * 1000 / max(1, clients), 3),
                "live_open_cpu_ms_per_client": round(opening_cpu * 1000 / max(1, clients), 3),
                "load_average": os.getloadavg(),
                **integrity(tally, storm, missed, complete=complete),
            }
        finally:
            await storm.close()
    finally:
        server.stop()
