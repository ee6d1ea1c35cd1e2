"""The SSE stream against a real server process on a loopback port."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.support import api
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, ids, sequence_of, without_epochs
from tests.support.waiting import eventually
from tests.support.write_paths import write_path


async def publish(server: ServerProcess, key: str, slug: str, data: Any, event: str | None = None) -> int:
    return await api.publish(server.url, key, slug, data, event)


async def test_every_subscriber_receives_each_message(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    subscribers = [Subscriber(f"{server.url}/events/{channel}/") for _ in range(5)]
    async with asyncio.TaskGroup() as group:
        for subscriber in subscribers:
            group.create_task(subscriber.__aenter__())
    try:
        for subscriber in subscribers:
            assert subscriber.status == 200
            assert sequence_of((await subscriber.opened()).id) == 0  # subscribed, with a resume point
        sent = [await publish(server, api_key, channel, {"n": n}, event="tick") for n in range(3)]
        for subscriber in subscribers:
            events = await subscriber.events(3)
            assert ids(events) == sent
            assert [e.event for e in events] == ["tick"] * 3
            assert [json.loads(e.data)["data"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert [sequence_of(e.id) for e in events] == sent
    finally:
        for subscriber in subscribers:
            await subscriber.close()


async def test_stream_headers_retry_and_envelope(server: ServerProcess, api_key: str, channel: str) -> None:
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        assert subscriber.response is not None
        headers = subscriber.response.headers
        assert headers["content-type"] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        opened = await subscriber.opened()
        # The retry hint comes first, in the same block as the open event (no block without data).
        assert subscriber.raw.startswith(
            f'retry: 2000\nid: {opened.id}\nevent: pushsite.open\ndata: {{"event":"pushsite.open","channels":["{channel}"],"titles":{{"{channel}":"{channel}"}},"history":false}}\n\n'.encode()
        )
        sequence = await publish(server, api_key, channel, {"text": "two\nlines\r\nand\rmore"})
        event = await subscriber.next_event()
        envelope = json.loads(event.data)
        assert envelope["channel"] == channel
        assert envelope["event"] == "message"
        assert envelope["id"] == sequence
        assert envelope["data"] == {"text": "two\nlines\r\nand\rmore"}
        assert envelope["published_at"].endswith("Z")
        # One data line: the JSON escapes every line break.
        assert f'id: {event.id}\nevent: message\ndata: {{"id":{sequence},'.encode() in subscriber.raw


async def test_idle_stream_gets_keepalive_comments(server: ServerProcess, channel: str) -> None:
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        # The test server's heartbeat is 1 s.
        await subscriber.wait_for_bytes(b": keep-alive\n\n", timeout=4)


async def test_resume_after_second_of_five_gives_exactly_the_rest(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    sent = [await publish(server, api_key, channel, n) for n in range(5)]
    async with Subscriber(
        f"{server.url}/events/{channel}/", headers={"Last-Event-ID": str(sent[1])}
    ) as subscriber:
        events = await subscriber.events(3)
        assert ids(events) == sent[2:]
        # Then live, with nothing repeated at the seam.
        sixth = await publish(server, api_key, channel, 5)
        assert ids([await subscriber.next_event()]) == [sixth]


async def test_resume_with_query_parameter(server: ServerProcess, api_key: str, channel: str) -> None:
    sent = [await publish(server, api_key, channel, n) for n in range(3)]
    async with Subscriber(f"{server.url}/events/{channel}/?lastEventId={sent[0]}") as subscriber:
        assert ids(await subscriber.events(2)) == sent[1:]


async def test_multi_channel_stream_resumes_every_channel(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    first, second = "pool-58", "pool-59"
    url = f"{server.url}/events/?channel={first}&channel={second}"
    async with Subscriber(url) as subscriber:
        await subscriber.opened()
        a1 = await publish(server, api_key, first, "a1")
        b1 = await publish(server, api_key, second, "b1")
        events = await subscriber.events(2)
        assert [json.loads(e.data)["data"] for e in events] == ["a1", "b1"]
        cursor = events[-1].id
        assert without_epochs(cursor) == f"{first}:{a1},{second}:{b1}"
    # Published while the client was away, interleaved.
    a2 = await publish(server, api_key, first, "a2")
    b2 = await publish(server, api_key, second, "b2")
    a3 = await publish(server, api_key, first, "a3")
    async with Subscriber(url, headers={"Last-Event-ID": cursor}) as resumed:
        events = await resumed.events(3)
        by_channel: dict[str, list[int]] = {}
        for event in events:
            envelope = json.loads(event.data)
            by_channel.setdefault(envelope["channel"], []).append(envelope["id"])
        assert by_channel == {first: [a2, a3], second: [b2]}
        assert without_epochs(events[-1].id) == f"{first}:{a3},{second}:{b2}"


async def test_disconnect_frees_the_connection_the_feed_and_its_tasks(
    server: ServerProcess, api_key: str, channel: str, request: pytest.FixtureRequest
) -> None:
    async def metric(name: str) -> float:
        return (await asyncio.to_thread(server.metrics)).get(name, 0.0)

    baseline_connections = await metric("pushsite_connections")
    tasks_before = await metric("pushsite_asyncio_tasks")
    subscribers = [Subscriber(f"{server.url}/events/{channel}/") for _ in range(10)]
    for subscriber in subscribers:
        await subscriber.__aenter__()
        await subscriber.opened()
    await eventually(
        lambda: metric("pushsite_connections"),
        lambda value: value == baseline_connections + 10,
        within=5,
        what="open connections",
    )
    tasks_while_open = await metric("pushsite_asyncio_tasks")
    direct = write_path(request) == "direct"
    if direct:
        # A stream that owns its connection holds no task at all: its ASGI task
        # ended once it opened (pushsite/protocol.py). Slack for the server's own.
        assert tasks_while_open < tasks_before + 5
    for subscriber in subscribers:
        await subscriber.close()
    await eventually(
        lambda: metric("pushsite_connections"),
        lambda value: value == baseline_connections,
        within=5,
        what="connections after disconnect",
    )
    # On the portable path each open stream holds its consumer's task (it awaits
    # receive itself: no second task per stream), given back when it ends.
    limit = tasks_before + 2 if direct else tasks_while_open - 10
    await eventually(
        lambda: metric("pushsite_asyncio_tasks"),
        lambda value: value <= limit,
        within=5,
        what="asyncio tasks after disconnect",
    )
    # The feed leaves the channel's group once it has been empty for the linger time.
    channels_before = (await asyncio.to_thread(httpx.get, f"{server.url}/healthz")).json()
    assert channels_before["status"] == "ok"
    await eventually(
        lambda: _feed_listed(server, channel),
        lambda listed: not listed,
        within=5,
        what=f"feed for {channel} still subscribed",
    )


async def _feed_listed(server: ServerProcess, slug: str) -> bool:
    text = (await asyncio.to_thread(httpx.get, f"{server.url}/metrics")).text
    return f'pushsite_feed_connections{{channel="{slug}"}}' in text


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/events/no-such-channel/", 404, "channel_not_found"),
        ("/events/switched-off/", 404, "channel_not_found"),
        ("/events/", 400, "invalid"),
        ("/events/?channel=" + "&channel=".join(f"pool-{n}" for n in range(11)), 400, "invalid"),
        # A channel the reader may not read is refused as one that does not exist.
        ("/events/private-room/", 404, "channel_not_found"),
        ("/events/members/", 404, "channel_not_found"),
        # Credentials that are wrong are refused whatever the channel.
        ("/events/private-room/?token=forged", 403, "forbidden"),
        ("/events/no-such-channel/?token=forged", 403, "forbidden"),
        ("/events/pool-0/?lastEventId=abc", 400, "invalid"),
        ("/events/pool-0/?lastEventId=" + "9" * 30, 400, "invalid"),
        ("/events/?channel=pool-0&channel=pool-1&lastEventId=5", 400, "invalid"),
    ],
)
async def test_refused_streams_answer_json_before_streaming(
    server: ServerProcess, path: str, status: int, code: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert response.json()["detail"]


async def test_unknown_host_is_refused_on_the_stream_path(server: ServerProcess, channel: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/events/{channel}/", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert "Host" in response.json()["detail"]


async def test_cross_origin_only_from_allowed_origins(server: ServerProcess) -> None:
    allowed = Subscriber(
        f"{server.url}/events/partner-feed/", headers={"Origin": "http://partner.example:8080"}
    )
    async with allowed:
        assert allowed.status == 200
        assert allowed.response is not None
        assert allowed.response.headers["access-control-allow-origin"] == "http://partner.example:8080"
    async with httpx.AsyncClient() as client:
        refused = await client.get(
            f"{server.url}/events/partner-feed/", headers={"Origin": "http://partner.example.evil.test"}
        )
    assert refused.status_code == 403
    # Readable (so a widget can say why), and nothing else is exposed.
    assert refused.headers["access-control-allow-origin"] == "*"
    assert refused.json()["error"] == "forbidden"


async def test_private_channel_with_token(server: ServerProcess, site: Site, api_key: str) -> None:
    token = site.manage("mint_token", "private-room", "--ttl", "60").strip()
    async with Subscriber(f"{server.url}/events/private-room/?token={token}") as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        sequence = await publish(server, api_key, "private-room", "secret")
        assert ids([await subscriber.next_event()]) == [sequence]
    other = site.manage("mint_token", "members", "--ttl", "60").strip()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/events/private-room/?token={other}")
    assert response.status_code == 404
    assert response.json() == {
        "error": "channel_not_found",
        "detail": "No active channel is called 'private-room'.",
    }


async def test_history_gone_gives_an_explicit_reset(server: ServerProcess, api_key: str) -> None:
    # short-history keeps 3 messages (the test server prunes on every publish).
    sent = [await publish(server, api_key, "short-history", n) for n in range(6)]
    async with Subscriber(
        f"{server.url}/events/short-history/", headers={"Last-Event-ID": str(sent[0])}
    ) as subscriber:
        events = await subscriber.events(4)
    assert events[0].event == "pushsite.reset"
    reset = json.loads(events[0].data)["data"]
    assert reset["requested_after"] == sent[0]
    assert reset["resumed_after"] == sent[2]
    assert ids(events[1:]) == sent[3:]


async def test_position_beyond_the_end_resets_to_the_end(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    last = await publish(server, api_key, channel, "only")
    async with Subscriber(
        f"{server.url}/events/{channel}/", headers={"Last-Event-ID": "999999"}
    ) as subscriber:
        reset = await subscriber.next_event()
        assert reset.event == "pushsite.reset"
        assert sequence_of(reset.id) == last
        following = await publish(server, api_key, channel, "next")
        assert ids([await subscriber.next_event()]) == [following]


async def test_message_published_by_another_process_arrives_through_the_poll(
    server: ServerProcess, site: Site, channel: str
) -> None:
    # With the in-memory layer, `manage.py publish` cannot reach the server's
    # relay directly: the relay's database poll must deliver it. (The server's
    # first request was /healthz, so this also proves relay tasks do not
    # inherit a finished request's executor.)
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        await subscriber.opened()
        await asyncio.to_thread(site.manage, "publish", channel, '{"via": "command"}')
        event = await subscriber.next_event(timeout=5)
    assert json.loads(event.data)["data"] == {"via": "command"}
    assert "CurrentThreadExecutor" not in server.log()
