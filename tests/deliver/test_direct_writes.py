"""Below ASGI: an evicted reader's socket is aborted at once, and SIGTERM does not wait for it (issue 15).

Against ``manage.py serve`` as deployed (direct writes, pushsite/protocol.py). The
server side of the connection is read from /proc/net/tcp: after the abort it is
gone, not ESTABLISHED with megabytes queued for a client that never reads.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SERVER_SETTINGS
from tests.support import api
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually
from tests.system.test_slow_reader import open_stalled_reader

MESSAGE_BYTES = 60_000
MESSAGES = 120  # about 7 MB: more than the loopback buffers and the 1 MiB backlog bound
ESTABLISHED = "01"
_names = itertools.count()


def server_side_state(server_port: int, client_port: int) -> str | None:
    """The TCP state of the server's end of this connection (None: no such socket)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return state
    return None


async def read_to_the_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def evictions(server: ServerProcess) -> float:
    values = await asyncio.to_thread(server.metrics)
    return values.get("pushsite_slow_reader_evictions_total", 0)


async def flood(server: ServerProcess, key: str, slug: str) -> None:
    payload = "x" * MESSAGE_BYTES
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(MESSAGES):
            await api.publish(server.url, key, slug, f"{n}:{payload}", client=client)


@pytest.fixture
def slug(site: Site) -> str:
    name = f"direct-{next(_names)}"
    site.create_channels(name)
    return name


@pytest.fixture
def own_server(site: Site) -> Iterator[ServerProcess]:
    """A process of its own, to stop with SIGTERM."""
    process = ServerProcess(
        Site(site.workdir, site.database_url, settings=dict(SERVER_SETTINGS)), name="direct-own"
    )
    yield process.start()
    process.stop()


async def test_an_evicted_reader_is_aborted_at_once_and_counted_once(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    if server.args:
        pytest.skip("only the direct path can abort the socket (plain ASGI has no abort)")
    before = await evictions(server)
    connections_before = (await asyncio.to_thread(server.metrics)).get("pushsite_connections", 0)
    reader, writer = await open_stalled_reader("127.0.0.1", server.port, f"/events/{slug}/")
    client_port = writer.get_extra_info("sockname")[1]
    try:
        assert server_side_state(server.port, client_port) == ESTABLISHED
        await flood(server, api_key, slug)
        await eventually(lambda: evictions(server), lambda n: n == before + 1, within=15, what="evictions")
        # Aborted, not closed gracefully: the server's end is gone although the client never read.
        await eventually(
            lambda: asyncio.to_thread(server_side_state, server.port, client_port),
            lambda state: state is None,
            within=5,
            what="the server's end of the evicted connection",
        )
        metrics = await asyncio.to_thread(server.metrics)
        assert metrics["pushsite_slow_reader_evictions_total"] == before + 1
        assert metrics.get("pushsite_connections", 0) == connections_before
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(read_to_the_end(reader), 10)
    finally:
        writer.close()


async def test_sigterm_exits_within_two_seconds_with_evicted_stalled_and_live_readers(
    own_server: ServerProcess, site: Site, api_key: str, slug: str
) -> None:
    server = own_server
    _evicted_reader, evicted = await open_stalled_reader("127.0.0.1", server.port, f"/events/{slug}/")
    await flood(server, api_key, slug)
    await eventually(lambda: evictions(server), lambda n: n >= 1, within=15, what="evictions")
    # Stalled with a full socket but not over the bound yet, and one that reads.
    _stalled_reader, stalled = await open_stalled_reader("127.0.0.1", server.port, f"/events/{slug}/")
    await api.publish(server.url, api_key, slug, "x" * MESSAGE_BYTES)
    async with Subscriber(f"{server.url}/events/{slug}/") as live:
        await live.opened()
        started = time.monotonic()
        # uvicorn re-raises the signal once it has shut down.
        assert await asyncio.to_thread(server.stop, timeout=10) in (0, -signal.SIGTERM)
        took = time.monotonic() - started
    evicted.close()
    stalled.close()
    print(f"SIGTERM to exit: {took:.2f} s")
    assert took < 2.0
