"""Live-only events: fanned out with no sequence, written with no id, never stored."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from asgiref.sync import sync_to_async
from asgiref.typing import ASGISendEvent

from events.deliver.relay import Feed, get_relay
from events.deliver.stream import Stream, StreamChannel
from events.exceptions import InvalidInput
from events.models import Message
from events.provisioning import upsert_channel
from events.publish.store import apublish, fan_out_ephemeral
from events.wire import frames


class Client:
    """What one stream wrote, as the ASGI server would have sent it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.wrote = asyncio.Event()

    async def send(self, message: ASGISendEvent) -> None:
        assert message["type"] == "http.response.body"
        self.bodies.append(message["body"])
        self.wrote.set()

    async def next_body(self) -> bytes:
        async with asyncio.timeout(5):
            while not self.bodies:
                self.wrote.clear()
                await self.wrote.wait()
        return self.bodies.pop(0)


def make_stream(client: Client, channels: list[StreamChannel], positions: dict[int, int]) -> Stream:
    return Stream(channels=channels, positions=positions, asgi_send=client.send, on_close=lambda _: None)


def typing_fields(slug: str) -> bytes:
    return frames.ephemeral_fields(
        slug=slug, event="typing", data={"who": "ann"}, published_at=datetime.now(UTC)
    )


def test_feed_hands_live_only_frames_on_without_moving_any_position() -> None:
    client = Client()
    news = StreamChannel(id=1, slug="news")
    stream = make_stream(client, [news], {1: 5})
    feed = Feed(1, "news")
    feed.position = 5
    feed.streams.add(stream)

    fields = typing_fields("news")
    feed.on_frame(None, fields, time.time())
    assert client.bodies == [fields]
    assert not fields.startswith(b"id:")
    assert feed.position == 5
    assert stream.positions == {1: 5}
    assert stream.cursor() == "5"

    # The sequence goes on exactly where it was.
    feed.on_frame(6, b"event: message\ndata: {}\n\n", time.time())
    assert client.bodies[-1] == b"id: 6\nevent: message\ndata: {}\n\n"


def test_live_only_frames_reach_a_feed_that_is_reading_history() -> None:
    client = Client()
    stream = make_stream(client, [StreamChannel(id=1, slug="news")], {1: 0})
    feed = Feed(1, "news")
    feed.catching_up = 10  # as if reading from the database
    feed.streams.add(stream)
    feed.on_frame(None, typing_fields("news"), time.time())
    assert len(client.bodies) == 1
    assert feed.catching_up == 10


def test_multi_channel_stream_keeps_its_cursor() -> None:
    client = Client()
    channels = [StreamChannel(id=1, slug="news"), StreamChannel(id=2, slug="chat")]
    stream = make_stream(client, channels, {1: 3, 2: 7})
    stream.deliver_ephemeral(typing_fields("chat"))
    envelope = json.loads(client.bodies[0].split(b"data: ", 1)[1])
    assert envelope["channel"] == "chat"
    assert "id" not in envelope
    assert stream.cursor() == "news:3,chat:7"


@pytest.mark.django_db(transaction=True)
async def test_fan_out_ephemeral_reaches_streams_through_the_relay_and_stores_nothing() -> None:
    channel = await sync_to_async(lambda: upsert_channel("room")[0])()
    client = Client()
    room = StreamChannel(id=channel.pk, slug="room")
    stream = make_stream(client, [room], {channel.pk: 0})
    relay = get_relay()
    try:
        await relay.subscribe(stream, channel.pk, "room")
        await fan_out_ephemeral(channel, {"who": "ann"}, event="typing")
        body = await client.next_body()
        assert body.startswith(b"event: typing\ndata: ")
        envelope = json.loads(body.split(b"data: ", 1)[1])
        assert envelope["data"] == {"who": "ann"}
        assert envelope["channel"] == "room"
        assert "id" not in envelope
        assert await Message.objects.acount() == 0

        # A stored message after it still gets sequence 1: nothing was consumed.
        await apublish("room", "hello")
        assert (await client.next_body()).startswith(f"id: 1~{channel.epoch}\n".encode())
    finally:
        relay.unsubscribe(stream)
        await relay.stop()


@pytest.mark.django_db(transaction=True)
async def test_fan_out_ephemeral_validates_like_publishing() -> None:
    channel = await sync_to_async(lambda: upsert_channel("room")[0])()
    with pytest.raises(InvalidInput, match="reserved"):
        await fan_out_ephemeral(channel, "x", event="pushsite.typing")
    with pytest.raises(InvalidInput, match="JSON"):
        await fan_out_ephemeral(channel, {1, 2})
