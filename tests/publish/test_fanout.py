"""The background fan-out: bounded, in order, and every frame it does not send is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import override_settings
from prometheus_client import REGISTRY

from events.provisioning import upsert_channel
from events.publish import fanout
from events.publish.store import apublish, group_name


class ControlledLayer:
    """A channel layer whose sends the test holds (``gate``) or fails (``fail``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.started = asyncio.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("Redis is away")
        self.sent.append((group, message.get("n", message.get("sequence"))))


@pytest.fixture
def layer(monkeypatch: pytest.MonkeyPatch) -> ControlledLayer:
    controlled = ControlledLayer()
    monkeypatch.setattr(fanout, "get_channel_layer", lambda: controlled)
    return controlled


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("pushsite_fanout_dropped_total", {"reason": reason}) or 0.0


def failures() -> float:
    return REGISTRY.get_sample_value("pushsite_fanout_failures_total") or 0.0


def submit(group: str, *numbers: int) -> None:
    for n in numbers:
        fanout.submit(group, {"type": "test", "n": n})


async def test_frames_are_sent_after_submit_returns_in_order_per_group(layer: ControlledLayer) -> None:
    submit("a", 1)
    submit("b", 1)
    submit("a", 2, 3)
    submit("b", 2)
    # Nothing is sent inside submit(): the publisher has its answer first.
    assert layer.sent == []
    await fanout.flush()
    assert layer.sent == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)]
    assert fanout.queued() == 0


@override_settings(PUSHSITE={"FANOUT_QUEUE_SIZE": 3})
async def test_a_full_queue_drops_its_oldest_frames_and_counts_them(layer: ControlledLayer) -> None:
    layer.gate = asyncio.Event()
    before = dropped(fanout.QUEUE_FULL)
    submit("a", 0)
    await layer.started.wait()  # frame 0 is being sent: the queue is empty again
    submit("a", 1, 2, 3, 4, 5)
    assert fanout.queued() == 3
    assert dropped(fanout.QUEUE_FULL) - before == 2
    layer.gate.set()
    await fanout.flush()
    # The newest are sent, still in order; 1 and 2 are for the relays to read from the database.
    assert layer.sent == [("a", 0), ("a", 3), ("a", 4), ("a", 5)]


@override_settings(PUSHSITE={"LAYER_TIMEOUT_SECONDS": 0.2})
async def test_a_hung_layer_costs_each_send_the_timeout_and_stale_frames_are_dropped(
    layer: ControlledLayer,
) -> None:
    layer.gate = asyncio.Event()  # never set: Redis frozen
    failed_before, stale_before = failures(), dropped(fanout.STALE)
    submit("a", 1, 2, 3)
    await layer.started.wait()
    # Queued behind the hung send for longer than the layer timeout: stale.
    await fanout.flush()
    assert failures() - failed_before == 1  # frame 1 timed out
    assert dropped(fanout.STALE) - stale_before == 2  # 2 and 3 were never tried
    # The layer is back: a new frame goes out at once.
    layer.gate.set()
    submit("a", 4)
    await fanout.flush()
    assert layer.sent == [("a", 4)]


async def test_a_failing_layer_is_counted_and_later_frames_still_go(layer: ControlledLayer) -> None:
    layer.fail = True
    before = failures()
    submit("a", 1, 2)
    await fanout.flush()
    assert failures() - before == 2
    layer.fail = False
    submit("a", 3)
    await fanout.flush()
    assert layer.sent == [("a", 3)]


async def test_drain_sends_what_is_queued_within_its_bound_then_drops_the_rest(
    layer: ControlledLayer,
) -> None:
    submit("a", 1, 2)
    await fanout.drain(1.0)
    assert layer.sent == [("a", 1), ("a", 2)]

    layer.gate = asyncio.Event()  # hung from here on
    before = dropped(fanout.SHUTDOWN)
    submit("a", 3)  # after the drain: the process is stopping, nothing more is taken
    assert dropped(fanout.SHUTDOWN) - before == 1
    assert fanout.queued() == 0


async def test_drain_gives_up_on_a_hung_layer_at_its_bound(layer: ControlledLayer) -> None:
    layer.gate = asyncio.Event()
    before = dropped(fanout.SHUTDOWN)
    submit("a", 1, 2, 3)
    await layer.started.wait()
    started = time.monotonic()
    await fanout.drain(0.2)
    assert time.monotonic() - started < 1.0
    assert dropped(fanout.SHUTDOWN) - before == 2  # 1 was in flight, cancelled
    assert layer.sent == []


def test_each_event_loop_has_its_own_sender() -> None:
    async def which() -> fanout.Sender:
        return fanout.sender()

    first, second = asyncio.run(which()), asyncio.run(which())
    assert first is not second
    assert first.loop.is_closed()


@pytest.mark.django_db(transaction=True)
@override_settings(PUSHSITE={"LAYER_TIMEOUT_SECONDS": 5})
async def test_apublish_answers_without_waiting_for_a_hung_layer(layer: ControlledLayer) -> None:
    await sync_to_async(upsert_channel)("hung")
    layer.gate = asyncio.Event()
    started = time.monotonic()
    message = await apublish("hung", "stored all the same")
    elapsed = time.monotonic() - started
    assert message.sequence == 1
    await layer.started.wait()  # its frame is being sent, in the background
    assert elapsed < 1.0  # the layer holds the send for 5 s
    layer.gate.set()
    await fanout.flush()


@pytest.mark.django_db(transaction=True)
async def test_the_in_memory_layer_gets_the_frame_promptly() -> None:
    channel = (await sync_to_async(upsert_channel)("prompt"))[0]
    layer = get_channel_layer()
    name = await layer.new_channel()
    await layer.group_add(group_name(channel.pk), name)
    started = time.monotonic()
    await apublish("prompt", "now")
    frame = await asyncio.wait_for(layer.receive(name), 2)
    print(
        f"in-memory layer: frame received {(time.monotonic() - started) * 1000:.1f} ms after apublish began"
    )
    assert frame["sequence"] == 1
    assert time.monotonic() - started < 1.0


@pytest.mark.django_db(transaction=True)
@override_settings(PUSHSITE={"LAYER_TIMEOUT_SECONDS": 5})
async def test_sync_publish_under_a_server_queues_on_the_servers_loop(layer: ControlledLayer) -> None:
    """An admin action or a sync view (a sync_to_async thread) publishes without waiting on the layer."""
    from events.publish.store import publish

    await sync_to_async(upsert_channel)("from-a-view")
    layer.gate = asyncio.Event()
    started = time.monotonic()
    message = await sync_to_async(publish)("from-a-view", "stored all the same")
    elapsed = time.monotonic() - started
    assert message.sequence == 1
    await asyncio.wait_for(layer.started.wait(), 2)  # sent from this loop, in the background
    assert elapsed < 1.0  # the layer holds the send for 5 s
    layer.gate.set()
    await fanout.flush()
    assert [n for _, n in layer.sent] == [message.sequence]


def test_with_no_server_loop_a_thread_sends_directly() -> None:
    assert fanout.submit_from_thread("g", {"type": "test", "n": 1}) is False
