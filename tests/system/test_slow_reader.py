"""A subscriber that stops reading is cut off; the server's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import httpx
import pytest

from tests.support import api
from tests.support.sse_client import follow
from tests.support.waiting import eventually
from tests.system.conftest import Cluster

pytestmark = pytest.mark.system

MESSAGE_BYTES = 60_000
MESSAGES = 175  # about 10 MB


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def open_stalled_reader(
    host: str, port: int, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a small receive buffer that reads the response headers, then nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 200 " in head.split(b"\r\n")[0]
    return reader, writer


async def test_a_stalled_reader_is_disconnected_and_memory_stays_bounded(cluster: Cluster) -> None:
    slug = "sys-slow-reader"
    cluster.site.create_channels(slug)
    server = cluster.b
    assert server.process is not None
    pid = server.process.pid
    metrics = await asyncio.to_thread(server.metrics)
    evictions_before = metrics.get("pushsite_slow_reader_evictions_total", 0)
    baseline_rss = rss_kib(pid)

    reader, writer = await open_stalled_reader("127.0.0.1", server.port, f"/events/{slug}/")
    peak_rss = baseline_rss
    try:
        connected = asyncio.Event()
        healthy = asyncio.create_task(
            follow([f"{server.url}/events/{slug}/"], expect=MESSAGES, timeout=90, connected=connected)
        )
        await asyncio.wait_for(connected.wait(), 10)
        payload = "x" * MESSAGE_BYTES
        sent = []
        async with httpx.AsyncClient(timeout=30) as client:
            for n in range(MESSAGES):
                sent.append(
                    await api.publish(cluster.a.url, cluster.key, slug, f"{n}:{payload}", client=client)
                )
                if n % 25 == 0:
                    peak_rss = max(peak_rss, rss_kib(pid))
        # A subscriber that reads keeps up, on the same process, at the same time.
        assert await healthy == sent
        peak_rss = max(peak_rss, rss_kib(pid))
        metrics = await eventually(
            lambda: asyncio.to_thread(server.metrics),
            lambda values: values.get("pushsite_slow_reader_evictions_total", 0) > evictions_before,
            within=15,
            what="slow reader evictions",
        )
        # Only the stalled reader: the one that kept reading was never cut off.
        assert metrics["pushsite_slow_reader_evictions_total"] == evictions_before + 1
        growth_mib = (peak_rss - baseline_rss) / 1024
        print(
            f"published {MESSAGES * MESSAGE_BYTES / 1e6:.1f} MB; stalled reader evicted; "
            f"server RSS grew {growth_mib:.1f} MiB at most"
        )
        # 10 MB went out; the stalled connection may hold its backlog limit
        # (1 MiB) plus the transport's buffer, never the stream.
        assert growth_mib < 8
        # The evicted client's connection is gone: aborted at once under `manage.py serve`
        # (tests/deliver/test_direct_writes.py), so reading again ends in a reset.
        async with asyncio.timeout(30):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65536):
                    pass
    finally:
        writer.close()
