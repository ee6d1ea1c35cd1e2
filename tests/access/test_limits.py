"""Limits that protect a public deployment: streams per address, publish rate per key, logs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SERVER_SETTINGS
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def strict_server(site: Site) -> Iterator[ServerProcess]:
    """A second process on the same database with small limits."""
    strict = Site(
        workdir=site.workdir,
        database_url=site.database_url,
        settings={
            **SERVER_SETTINGS,
            "MAX_STREAMS_PER_IP": "5",
            "PUBLISH_RATE_MESSAGES": "5",
            "PUBLISH_RATE_SECONDS": "60",
        },
    )
    process = ServerProcess(strict, name="strict").start()
    yield process
    process.stop()


async def test_a_connection_flood_from_one_address_is_capped(strict_server: ServerProcess) -> None:
    url = f"{strict_server.url}/events/pool-54/"
    held = [Subscriber(url) for _ in range(5)]
    try:
        for subscriber in held:
            await subscriber.__aenter__()
            await subscriber.opened()
        async with httpx.AsyncClient() as client:
            refused = await client.get(url)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # Another address still gets in (127.0.0.2 is loopback too).
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with (
            httpx.AsyncClient(transport=transport, timeout=5) as other,
            other.stream("GET", url) as response,
        ):
            assert response.status_code == 200
    finally:
        for subscriber in held:
            await subscriber.close()
    # Closing frees the slots.
    async with Subscriber(url) as again:
        assert again.status == 200


async def test_a_burst_of_simultaneous_connects_gets_no_more_than_the_cap(
    strict_server: ServerProcess,
) -> None:
    # Issue 13: all at once, so that many are being authorised (in the database
    # thread) at the same moment; the cap is 5 on this server.
    url = f"{strict_server.url}/events/pool-52/"
    burst = [Subscriber(url) for _ in range(40)]
    try:
        await asyncio.gather(*(subscriber.__aenter__() for subscriber in burst))
        statuses = Counter(subscriber.status for subscriber in burst)
        assert statuses == {200: 5, 429: 35}
    finally:
        await asyncio.gather(*(subscriber.close() for subscriber in burst))
    # Every slot, refused or not, went back.
    await eventually(
        lambda: asyncio.to_thread(strict_server.metrics),
        lambda metrics: metrics.get("pushsite_connections") == 0,
        within=10,
        what="open streams after the burst closed",
    )
    again = [Subscriber(url) for _ in range(6)]
    try:
        await asyncio.gather(*(subscriber.__aenter__() for subscriber in again))
        assert Counter(subscriber.status for subscriber in again) == {200: 5, 429: 1}
    finally:
        await asyncio.gather(*(subscriber.close() for subscriber in again))


def test_a_publish_flood_is_limited_for_that_key_only(strict_server: ServerProcess, site: Site) -> None:
    flooding = site.create_api_key("flooding")
    calm = site.create_api_key("calm")
    url = f"{strict_server.url}/api/channels/pool-53/messages"
    statuses = [
        httpx.post(url, json={"data": n}, headers={"Authorization": f"Bearer {flooding}"}).status_code
        for n in range(6)
    ]
    assert statuses == [201] * 5 + [429]
    limited = httpx.post(url, json={"data": "x"}, headers={"Authorization": f"Bearer {flooding}"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "publishing too fast" in limited.json()["detail"]
    assert (
        httpx.post(url, json={"data": "ok"}, headers={"Authorization": f"Bearer {calm}"}).status_code == 201
    )
    # Nothing the limit refused was stored.
    history = httpx.get(f"{strict_server.url}/api/channels/pool-53/messages").json()
    assert [m["data"] for m in history["messages"]] == [0, 1, 2, 3, 4, "ok"]


def test_logs_say_who_published_and_never_hold_secrets(server: ServerProcess, site: Site) -> None:
    secret = site.create_api_key("log-check")
    token = site.manage("mint_token", "private-room", "--ttl", "60").strip()
    published = httpx.post(
        f"{server.url}/api/channels/pool-52/messages",
        json={"data": "hello"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert published.status_code == 201
    with httpx.stream("GET", f"{server.url}/events/private-room/?token={token}", timeout=5) as response:
        assert response.status_code == 200
    httpx.get(f"{server.url}/api/channels/private-room/messages?token={token}")
    log = server.log()
    assert f"Published pool-52#{published.json()['id']} event=message by key:log-check (" in log
    assert secret not in log
    assert secret.split("_", 2)[2] not in log
    assert token not in log
    assert "Stream opened: private-room from 127.0.0.1" in log


def test_a_token_subject_names_the_stream_in_the_log_and_cannot_forge_a_line(
    server: ServerProcess, site: Site
) -> None:
    subject = "ops-dashboard\nERROR Forged: line"
    token = site.manage("mint_token", "private-room", "--ttl", "60", "--subject", subject).strip()
    with httpx.stream("GET", f"{server.url}/events/private-room/?token={token}", timeout=5) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # the open event: the stream is attached and logged
    log = server.log()
    assert (
        "Stream opened: private-room from 127.0.0.1 with a token for 'ops-dashboard\\nERROR Forged: line'"
        in log
    )
    assert not any(line.startswith("ERROR Forged") for line in log.splitlines())


async def test_request_size_limit_on_a_real_server(server: ServerProcess, api_key: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.url}/api/channels/pool-52/messages",
            content=b'{"data": "' + b"x" * 200_000 + b'"}',
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


async def _open_streaming_publish(server: ServerProcess, key: str, slug: str) -> asyncio.StreamWriter:
    """A streaming publish whose chunked body has begun and goes on: it holds its connection."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST /api/channels/{slug}/stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    await writer.drain()
    return writer


async def _subscribe_status(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client, client.stream("GET", url) as response:
        return response.status_code


async def test_streaming_publishes_count_as_open_streams_of_their_address(
    strict_server: ServerProcess, api_key: str, channel: str
) -> None:
    # A streaming publish holds its connection as a subscription does: an address
    # could otherwise hold any number of them (the cap is 5 on this server).
    url = f"{strict_server.url}/events/{channel}/"
    held = [await _open_streaming_publish(strict_server, api_key, channel) for _ in range(5)]
    try:
        await eventually(
            lambda: _subscribe_status(url), lambda status: status == 429, within=10, what="a 6th stream"
        )
        async with httpx.AsyncClient(timeout=5) as client:
            refused = await client.post(
                f"{strict_server.url}/api/channels/{channel}/stream",
                content=b'{"data": 1}\n',
                headers={"authorization": f"Bearer {api_key}", "content-type": "application/x-ndjson"},
            )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        assert "open streams" in refused.json()["detail"]
    finally:
        held.pop().close()
    # The slot of the one that ended is given back.
    await eventually(lambda: _subscribe_status(url), lambda status: status == 200, within=10, what="a slot")
    for writer in held:
        writer.close()
    await eventually(
        lambda: asyncio.to_thread(strict_server.metrics),
        lambda metrics: metrics.get("pushsite_connections") == 0,
        within=10,
        what="every slot given back",
    )
