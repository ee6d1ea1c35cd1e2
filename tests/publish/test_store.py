"""publish() and apublish(): stored first, fanned out on commit, numbered in commit order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections, transaction
from django.test import override_settings
from django.utils import timezone

from events.exceptions import ChannelNotFound, InvalidInput
from events.models import Channel, Message
from events.provisioning import upsert_channel
from events.publish.store import (
    FRAME_MESSAGE_TYPE,
    Publish,
    _new_stored,
    apublish,
    group_name,
    publish,
)

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


async def listen(channel: Channel) -> tuple[Any, str]:
    layer = get_channel_layer()
    name = await layer.new_channel()
    await layer.group_add(group_name(channel.pk), name)
    return layer, name


async def nothing_arrives(layer: Any, name: str, within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(layer.receive(name), within)
    except TimeoutError:
        return True
    return False


async def test_publish_in_a_rolled_back_transaction_sends_and_stores_nothing() -> None:
    channel = await sync_to_async(lambda: upsert_channel("news")[0])()
    layer, name = await listen(channel)

    def publish_then_fail() -> None:
        with transaction.atomic():
            publish("news", {"draft": True})
            raise Rollback

    with pytest.raises(Rollback):
        await sync_to_async(publish_then_fail)()
    assert await nothing_arrives(layer, name)
    assert await Message.objects.acount() == 0
    assert (await Channel.objects.aget(slug="news")).last_sequence == 0

    # The same call committed does arrive: the listener above was live.
    await sync_to_async(publish)("news", {"draft": False})
    frame = await asyncio.wait_for(layer.receive(name), 2)
    assert frame["type"] == FRAME_MESSAGE_TYPE
    assert frame["sequence"] == 1
    assert b'"data":{"draft":false}' in frame["fields"]


async def test_publish_in_a_transaction_sends_only_after_commit() -> None:
    channel = await sync_to_async(lambda: upsert_channel("news")[0])()
    layer, name = await listen(channel)
    loop = asyncio.get_running_loop()
    seen_inside: list[bool] = []

    def publish_and_look() -> None:
        with transaction.atomic():
            publish("news", "hello")
            # Still inside the transaction: nothing may have been sent yet.
            seen_inside.append(
                asyncio.run_coroutine_threadsafe(nothing_arrives(layer, name, 0.2), loop).result()
            )

    await sync_to_async(publish_and_look, thread_sensitive=False)()
    assert seen_inside == [True]
    frame = await asyncio.wait_for(layer.receive(name), 2)
    assert frame["sequence"] == 1


async def test_apublish_stores_then_sends() -> None:
    channel = await sync_to_async(lambda: upsert_channel("news")[0])()
    layer, name = await listen(channel)
    message = await apublish("news", [1, 2], event="numbers")
    assert message.sequence == 1
    assert await Message.objects.filter(sequence=1, event="numbers").aexists()
    frame = await asyncio.wait_for(layer.receive(name), 2)
    assert frame["sequence"] == 1
    assert b"event: numbers\n" in frame["fields"]


def test_validation_happens_before_anything_is_stored() -> None:
    upsert_channel("news")
    with pytest.raises(InvalidInput):
        publish("news", "x", event="bad event")
    with pytest.raises(ChannelNotFound):
        publish("missing", "x")
    with pytest.raises(InvalidInput):
        publish("news", {1, 2})  # a set is not JSON
    with pytest.raises(InvalidInput):
        publish("news", [float("nan")])  # nor is NaN
    assert Message.objects.count() == 0
    assert Channel.objects.get(slug="news").last_sequence == 0


def test_concurrent_publishers_get_distinct_gapless_sequences() -> None:
    upsert_channel("busy")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                publish("busy", {"worker": n, "i": i})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    sequences = sorted(Message.objects.filter(channel__slug="busy").values_list("sequence", flat=True))
    assert sequences == list(range(1, 161))
    assert Channel.objects.get(slug="busy").last_sequence == 160


@override_settings(PUSHSITE={"PRUNE_EVERY": 5})
def test_history_is_pruned_to_the_retention_count() -> None:
    channel = upsert_channel("short")[0]
    channel.retention_count = 3
    channel.save()
    for n in range(10):
        publish("short", n)
    # Pruned at 5 and 10: at least 3 kept, never more than 3 + PRUNE_EVERY.
    assert list(Message.objects.filter(channel=channel).values_list("sequence", flat=True)) == [8, 9, 10]


def test_a_batch_builds_each_message_as_the_model_would() -> None:
    """``_new_stored`` (positional values) against ``Message(channel=..., ...)``, partial channel or full."""
    now = timezone.now()
    publish = Publish("news", "notice", {"n": [1, "é"]}, "key:x", 7, None)
    fields = [field.attname for field in Message._meta.concrete_fields]
    for channel in (Channel(slug="news"), Channel(pk=3, slug="news")):
        built = _new_stored(publish, channel, 5, now)
        expected = Message(
            channel=channel, sequence=5, event="notice", data=publish.data, publisher="key:x", created_at=now
        )
        assert [getattr(built, name) for name in fields] == [getattr(expected, name) for name in fields]
        assert built.channel is channel
        assert built.channel_id == channel.pk
        assert built._state.adding
        assert built._state.db is None
