"""The relay and a stream in-process: gap filling, ordering, ephemeral frames, eviction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from asgiref.typing import ASGISendEvent
from django.test import override_settings

from events.deliver.relay import LAYER_LOSS_SECONDS, Relay, get_relay
from events.deliver.stream import Stream, StreamChannel
from events.metrics import stats
from events.models import Channel
from events.provisioning import upsert_channel
from events.publish import fanout
from events.publish.store import apublish, fan_out, fan_out_ephemeral, store_message
from events.wire import sse
from tests.support.sse_client import sequence_of

pytestmark = pytest.mark.django_db(transaction=True)


class Client:
    """Collects what a stream writes, like an ASGI server whose socket always takes it."""

    def __init__(self) -> None:
        self.decoder = sse.Decoder()
        self.events: list[sse.ServerSentEvent] = []
        self.arrived = asyncio.Event()
        self.closed_reason = ""

    async def send(self, message: ASGISendEvent) -> None:
        assert message["type"] == "http.response.body"
        self.events.extend(self.decoder.feed(message["body"].decode()))
        self.arrived.set()

    async def wait_for(self, count: int) -> list[sse.ServerSentEvent]:
        async with asyncio.timeout(5):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events


@pytest.fixture
async def channel() -> Channel:
    return (await sync_to_async(upsert_channel)("relay-test"))[0]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = get_relay()
    yield relay
    await relay.stop()


async def open_stream(relay: Relay, channel: Channel, client: Client, position: int = 0) -> Stream:
    stream = Stream(
        channels=[StreamChannel(id=channel.pk, slug=channel.slug)],
        positions={channel.pk: position},
        asgi_send=client.send,
        on_close=lambda reason: setattr(client, "closed_reason", reason),
    )
    dispatched = await relay.subscribe(stream, channel.pk, channel.slug)
    if position < dispatched:
        stream.catch_up(channel.pk, target=dispatched)
    return stream


async def test_a_message_the_layer_dropped_is_read_back_from_the_database(
    relay: Relay, channel: Channel
) -> None:
    client = Client()
    await open_stream(relay, channel, client)
    first = await apublish(channel.slug, "one")
    # Stored but never fanned out: as if the channel layer lost it.
    lost = await sync_to_async(store_message)(channel.slug, "two")
    third = await apublish(channel.slug, "three")
    events = await client.wait_for(3)
    assert [sequence_of(e.id) for e in events] == [first.sequence, lost.sequence, third.sequence]
    assert {e.id.split("~")[1] for e in events} == {channel.epoch}
    assert [e.data.count('"data":"') for e in events] == [1, 1, 1]


@override_settings(PUSHSITE={"RELAY_POLL_SECONDS": 0.1})
async def test_a_lost_last_message_arrives_through_the_poll(relay: Relay, channel: Channel) -> None:
    client = Client()
    await open_stream(relay, channel, client)
    lost = await sync_to_async(store_message)(channel.slug, "nobody fanned me out")
    events = await client.wait_for(1)
    assert events[0].id == f"{lost.sequence}~{channel.epoch}"


async def test_frames_arriving_out_of_order_are_written_in_order_once(relay: Relay, channel: Channel) -> None:
    client = Client()
    await open_stream(relay, channel, client)
    messages = [await sync_to_async(store_message)(channel.slug, n) for n in range(4)]
    for message in (messages[2], messages[0], messages[3], messages[1], messages[2]):
        await fan_out(message)
    # A last message through the same FIFO: once it is written, any duplicate
    # of the earlier ones would have been written before it.
    last = await apublish(channel.slug, "last")
    await client.wait_for(5)
    assert [sequence_of(e.id) for e in client.events] == [m.sequence for m in [*messages, last]]


async def test_reordered_frames_are_not_counted_as_lost_but_a_dropped_one_is(
    relay: Relay, channel: Channel
) -> None:
    client = Client()
    await open_stream(relay, channel, client)
    feed = relay.feeds[channel.pk]
    lost_before, late_before = stats.lost_by_layer, stats.layer_late
    messages = [await sync_to_async(store_message)(channel.slug, n) for n in range(3)]
    # Reordered: 1 and 2 first (a gap: both read from the database), then 0 late.
    for message in (messages[1], messages[2], messages[0]):
        await fan_out(message)
    # Sent in the background: every frame is in the layer before the loss count is read.
    await fanout.flush()
    last = await apublish(channel.slug, "in order")
    await fanout.flush()
    await client.wait_for(4)
    later = time.monotonic() + LAYER_LOSS_SECONDS + 1
    assert feed.count_lost(later) == 0
    # 0 came during the read from the database or after it (then it is "late"): never lost.
    assert stats.lost_by_layer == lost_before
    assert stats.layer_late - late_before in (0, 1)

    # Dropped: stored, never fanned out; the next message exposes the gap.
    await sync_to_async(store_message)(channel.slug, "never sent")
    await apublish(channel.slug, "after the drop")
    await fanout.flush()
    await client.wait_for(6)
    assert feed.count_lost(time.monotonic()) == 0  # not yet: its frame may still come
    assert feed.count_lost(time.monotonic() + LAYER_LOSS_SECONDS + 1) == 1
    assert stats.lost_by_layer == lost_before + 1
    assert last.sequence == messages[2].sequence + 1


async def test_ephemeral_frames_have_no_id_and_leave_the_position(relay: Relay, channel: Channel) -> None:
    client = Client()
    stream = await open_stream(relay, channel, client)
    stored = await apublish(channel.slug, "stored")
    await fan_out_ephemeral(channel, {"user": "ada"}, event="typing")
    events = await client.wait_for(2)
    assert [(e.event, e.id) for e in events] == [
        ("message", f"{stored.sequence}~{channel.epoch}"),
        ("typing", f"{stored.sequence}~{channel.epoch}"),
    ]
    assert '"id"' not in events[1].data  # the decoder keeps the last id; the frame itself has none
    assert b"id:" not in sse.encode_fields(events[1].data, event="typing")
    assert stream.positions[channel.pk] == stored.sequence


@override_settings(PUSHSITE={"MAX_BACKLOG_BYTES": 10_000})
async def test_a_reader_whose_socket_is_full_is_evicted_at_the_backlog_limit(
    relay: Relay, channel: Channel
) -> None:
    stuck = asyncio.get_running_loop().create_future()
    reasons: list[str] = []
    closed = asyncio.Event()

    async def full_socket(message: ASGISendEvent) -> None:
        await stuck  # never completes: the client does not read

    def on_close(reason: str) -> None:
        reasons.append(reason)
        closed.set()

    stream = Stream(
        channels=[StreamChannel(id=channel.pk, slug=channel.slug)],
        positions={channel.pk: 0},
        asgi_send=full_socket,
        on_close=on_close,
    )
    await relay.subscribe(stream, channel.pk, channel.slug)
    for _ in range(5):
        await apublish(channel.slug, "x" * 3000)
    await asyncio.wait_for(closed.wait(), 5)
    assert reasons == ["slow reader: backlog over limit"]
    assert stream.closed
    stream.write(b"more")
    assert stream._backlog == []  # a closed stream queues nothing
