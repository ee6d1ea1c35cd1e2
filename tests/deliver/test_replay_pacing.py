"""Replay and gap filling are paced by the socket: readers that keep up get all of it, readers that do not are evicted.

Against a real server whose backlog bound is the default 1 MiB: 2,000 messages of
8 KiB are 16 MiB of history, far over the bound. The server reads them from the
database in one batch (PUSHSITE_REPLAY_BATCH_SIZE=2000), so without pacing a batch
is more than the loopback socket's buffers (4 MiB here) and the bound together.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from tests.conftest import SERVER_SETTINGS
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, ids
from tests.support.waiting import eventually
from tests.system.test_slow_reader import open_stalled_reader

MESSAGES = 2000
PAYLOAD = 8 * 1024

_names = itertools.count()


def store_history(site: Site, slug: str, count: int) -> None:
    """Messages stored by another process, without fan-out (as if the channel layer lost them all)."""
    site.shell(
        "from django.db import transaction\n"
        "from events.publish.store import store_message\n"
        "with transaction.atomic():\n"
        f"    for n in range({count}): store_message({slug!r}, {{'n': n, 'pad': 'x' * {PAYLOAD}}})\n"
    )


@pytest.fixture(scope="module", params=["direct", "asgi-send"])
def server(request: pytest.FixtureRequest, site: Site) -> Iterator[ServerProcess]:
    """A second process on the same database that replays in large batches and evicts stuck writes in 3 s.

    Once per write path (tests/deliver/conftest.py).
    """
    paced = Site(
        workdir=site.workdir,
        database_url=site.database_url,
        settings={**SERVER_SETTINGS, "REPLAY_BATCH_SIZE": str(MESSAGES), "SEND_TIMEOUT_SECONDS": "3"},
    )
    args = ("--portable",) if request.param == "asgi-send" else ()
    process = ServerProcess(paced, name=f"replay-pacing-{request.param}", args=args).start()
    yield process
    process.stop()


@pytest.fixture
def long_history(site: Site) -> str:
    """A channel that keeps everything (no retention), with no messages yet."""
    slug = f"long-history-{next(_names)}"
    site.shell(
        "from events.provisioning import upsert_channel\n"
        f"c, _ = upsert_channel({slug!r}); c.retention_count = None; c.save()\n"
    )
    return slug


async def evictions(server: ServerProcess) -> float:
    values = await asyncio.to_thread(server.metrics)
    return values.get("pushsite_slow_reader_evictions_total", 0)


async def test_a_reader_that_keeps_up_replays_a_long_history_of_large_messages_with_no_eviction(
    server: ServerProcess, site: Site, long_history: str
) -> None:
    await asyncio.to_thread(store_history, site, long_history, MESSAGES)
    before = await evictions(server)
    async with Subscriber(f"{server.url}/events/{long_history}/", headers={"Last-Event-ID": "0"}) as reader:
        received = await reader.events(MESSAGES, timeout=120)
    assert ids(received) == list(range(1, MESSAGES + 1))
    assert all(event.event == "message" for event in received)
    assert len(reader.raw) > MESSAGES * PAYLOAD  # it really was 16 MiB through the socket
    assert await evictions(server) == before


async def test_a_gap_fill_after_an_outage_reaches_every_live_reader_with_no_eviction(
    server: ServerProcess, site: Site, long_history: str
) -> None:
    url = f"{server.url}/events/{long_history}/"
    before = await evictions(server)
    readers = [Subscriber(url) for _ in range(3)]
    for reader in readers:
        await reader.__aenter__()
        await reader.opened()
    try:
        # Stored by another process: this server's relay sees it only through its
        # database poll and fills the whole gap at once.
        await asyncio.to_thread(store_history, site, long_history, MESSAGES)
        results = await asyncio.gather(*(reader.events(MESSAGES, timeout=120) for reader in readers))
    finally:
        for reader in readers:
            await reader.close()
    for received in results:
        assert ids(received) == list(range(1, MESSAGES + 1))
    assert await evictions(server) == before


async def test_a_reader_that_never_reads_is_still_evicted(
    server: ServerProcess, site: Site, long_history: str
) -> None:
    await asyncio.to_thread(store_history, site, long_history, MESSAGES)
    before = await evictions(server)
    _reader, writer = await open_stalled_reader(
        "127.0.0.1", server.port, f"/events/{long_history}/?lastEventId=0"
    )
    try:
        # Its socket fills; the write that never finishes evicts it after
        # PUSHSITE_SEND_TIMEOUT_SECONDS (3 s on this server).
        await eventually(
            lambda: evictions(server),
            lambda count: count > before,
            within=20,
            what="slow reader evictions",
        )
    finally:
        writer.close()
