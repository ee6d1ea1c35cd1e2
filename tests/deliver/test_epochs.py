"""A resume point from another incarnation of a channel gets an explicit reset, never a silent skip."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from events.deliver.stream import Reset, Stream, StreamChannel
from events.wire.cursors import Position
from tests.support import api
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, ids, sequence_of

_names = itertools.count()


def recreate(site: Site, slug: str) -> None:
    """Delete the channel (its history goes with it) and create one with the same slug."""
    site.shell(f"from events.models import Channel\nChannel.objects.filter(slug={slug!r}).delete()")
    site.create_channel(slug)


@pytest.fixture
def reborn(site: Site) -> str:
    slug = f"reborn-{next(_names)}"
    site.create_channel(slug)
    return slug


async def publish(server: ServerProcess, key: str, slug: str, data: Any) -> int:
    return await api.publish(server.url, key, slug, data)


async def test_a_position_in_a_deleted_and_recreated_channel_gets_a_reset_and_the_new_history(
    server: ServerProcess, site: Site, api_key: str, reborn: str
) -> None:
    url = f"{server.url}/events/{reborn}/"
    async with Subscriber(url) as subscriber:
        await subscriber.opened()
        sent = [await publish(server, api_key, reborn, f"old {n}") for n in range(3)]
        saved = (await subscriber.events(3))[-1].id
    assert sequence_of(saved) == sent[-1] == 3

    recreate(site, reborn)
    # The new incarnation goes past the saved position: resuming by number alone
    # would silently skip its first three messages.
    fresh = [await publish(server, api_key, reborn, f"new {n}") for n in range(5)]
    assert fresh == [1, 2, 3, 4, 5]

    async with Subscriber(url, headers={"Last-Event-ID": saved}) as subscriber:
        opened = await subscriber.opened()
        events = await subscriber.events(6)
    # Until the reset is written, the stream's id repeats the client's own position.
    assert opened.id == saved
    assert events[0].event == "pushsite.reset"
    assert json.loads(events[0].data)["data"] == {
        "reason": "epoch-changed",
        "requested_after": 3,
        "resumed_after": 0,
    }
    new_epoch = events[0].id.split("~")[1]
    assert events[0].id == f"0~{new_epoch}"
    assert new_epoch != saved.split("~")[1]
    assert ids(events[1:]) == fresh
    assert [json.loads(e.data)["data"] for e in events[1:]] == [f"new {n}" for n in range(5)]


async def test_an_id_without_an_epoch_resumes_in_the_channel_as_it_is(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    # Ids sent before epochs existed, and the JSON API's ids that pages start from.
    sent = [await publish(server, api_key, channel, n) for n in range(4)]
    async with Subscriber(
        f"{server.url}/events/{channel}/", headers={"Last-Event-ID": str(sent[1])}
    ) as subscriber:
        events = await subscriber.events(2)
    assert [e.event for e in events] == ["message", "message"]
    assert ids(events) == sent[2:]


async def test_a_multi_channel_stream_resets_only_the_channel_from_another_incarnation(
    server: ServerProcess, site: Site, api_key: str, reborn: str, channel: str
) -> None:
    url = f"{server.url}/events/?channel={channel}&channel={reborn}"
    kept = await publish(server, api_key, channel, "kept 1")
    await publish(server, api_key, reborn, "old")
    await publish(server, api_key, reborn, "old")
    async with Subscriber(url) as subscriber:
        saved = (await subscriber.opened()).id
    recreate(site, reborn)
    fresh = [await publish(server, api_key, reborn, f"new {n}") for n in range(3)]
    after = await publish(server, api_key, channel, "kept 2")

    async with Subscriber(url, headers={"Last-Event-ID": saved}) as subscriber:
        opened = await subscriber.opened()
        events = await subscriber.events(5)
    assert opened.id == saved
    by_channel: dict[str, list[Any]] = {}
    for event in events:
        envelope = json.loads(event.data)
        by_channel.setdefault(envelope["channel"], []).append(
            envelope["data"]["reason"] if event.event == "pushsite.reset" else envelope["id"]
        )
    assert by_channel == {reborn: ["epoch-changed", *fresh], channel: [after]}
    assert kept < after


async def test_a_position_beyond_the_end_with_the_current_epoch_still_resets_to_the_end(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        epoch = (await subscriber.opened()).id.split("~")[1]
    last = await publish(server, api_key, channel, "only")
    async with Subscriber(
        f"{server.url}/events/{channel}/", headers={"Last-Event-ID": f"999~{epoch}"}
    ) as subscriber:
        reset = await subscriber.next_event()
    assert reset.event == "pushsite.reset"
    assert json.loads(reset.data)["data"]["reason"] == "unknown-position"
    assert reset.id == f"{last}~{epoch}"


def test_ids_repeat_the_clients_position_until_its_reset_is_written() -> None:
    written: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        written.append(message["body"])

    news = StreamChannel(id=1, slug="news", epoch="aaaaaaaa")
    scores = StreamChannel(id=2, slug="scores", epoch="bbbbbbbb")
    stream = Stream(
        channels=[news, scores],
        positions={1: 0, 2: 7},
        asgi_send=send,  # type: ignore[arg-type]  # a plain-dict fake of the ASGI send
        on_close=lambda reason: None,
        resets={1: Reset(Position(12, "cccccccc"), 0, "epoch-changed")},
    )
    assert stream.cursor() == "news:12~cccccccc,scores:7~bbbbbbbb"
    stream.write_pending_reset(news)
    assert stream.cursor() == "news:0~aaaaaaaa,scores:7~bbbbbbbb"
    stream.write_pending_reset(news)  # once only
    assert stream.cursor() == "news:0~aaaaaaaa,scores:7~bbbbbbbb"


async def test_renew_epochs_ends_open_streams_and_their_ids_then_reset(
    server: ServerProcess, site: Site, api_key: str, reborn: str
) -> None:
    url = f"{server.url}/events/{reborn}/"
    sent = [await publish(server, api_key, reborn, n) for n in range(3)]
    async with Subscriber(url) as subscriber:
        saved = (await subscriber.opened()).id
        assert "1 channel(s) have a new epoch." in site.manage("renew_epochs", reborn)
        # The relay's poll (0.5 s in tests) sees the new epoch and ends the stream.
        ending = await subscriber.until_closed(timeout=10)
    assert [e.event for e in ending] == ["pushsite.close"]
    assert json.loads(ending[0].data)["reason"] == "channel epoch changed"

    async with Subscriber(url, headers={"Last-Event-ID": saved}) as subscriber:
        events = await subscriber.events(4)
        later = await publish(server, api_key, reborn, "after the renewal")
        live = await subscriber.next_event()
    assert events[0].event == "pushsite.reset"
    assert json.loads(events[0].data)["data"]["reason"] == "epoch-changed"
    assert ids(events[1:]) == sent
    assert ids([live]) == [later]
    assert live.id.split("~")[1] != saved.split("~")[1]


async def test_a_database_that_went_back_under_a_running_server_gets_a_new_epoch(
    server: ServerProcess, site: Site, api_key: str, reborn: str
) -> None:
    url = f"{server.url}/events/{reborn}/"
    sent = [await publish(server, api_key, reborn, f"before {n}") for n in range(5)]
    async with Subscriber(url) as subscriber:
        saved = (await subscriber.opened()).id
        assert sequence_of(saved) == 5
        # As if a backup taken after message 2 were restored.
        site.shell(
            "from events.models import Channel, Message\n"
            f"Message.objects.filter(channel__slug={reborn!r}, sequence__gt=2).delete()\n"
            f"Channel.objects.filter(slug={reborn!r}).update(last_sequence=2)\n"
        )
        ending = await subscriber.until_closed(timeout=10)
    assert json.loads(ending[-1].data)["reason"] == "channel epoch changed"
    rewritten = [await publish(server, api_key, reborn, f"after {n}") for n in range(4)]
    assert rewritten == [3, 4, 5, 6]

    async with Subscriber(url, headers={"Last-Event-ID": saved}) as subscriber:
        events = await subscriber.events(7)
    assert events[0].event == "pushsite.reset"
    assert json.loads(events[0].data)["data"]["reason"] == "epoch-changed"
    assert ids(events[1:]) == [*sent[:2], *rewritten]


async def test_a_feed_that_moved_on_while_the_poll_read_is_not_a_database_that_went_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Live frames keep arriving while the poll's query runs: under load the feed
    # is past what the query saw. That must not renew the epoch (every stream
    # would end and replay its history as a reset: duplicates for every client).
    from channels.layers import InMemoryChannelLayer

    from events.deliver import history, relay
    from events.deliver.history import ChannelState

    hub = relay.Relay(InMemoryChannelLayer())
    feed = relay.Feed(7, "busy")
    feed.set_epoch("aaaaaaaa")
    feed.position = 10
    hub.feeds[7] = feed
    renewed: list[int] = []

    async def states_read_while_frames_arrive(ids: list[int]) -> dict[int, ChannelState]:
        state = ChannelState(last_sequence=11, is_active=True, visibility="public", epoch="aaaaaaaa")
        feed.position = 12  # frames 11 and 12 were dispatched while the query ran
        return {7: state}

    async def renew(channel_id: int, old_epoch: str) -> None:
        renewed.append(channel_id)

    monkeypatch.setattr(history, "afetch_channel_states", states_read_while_frames_arrive)
    monkeypatch.setattr(history, "arenew_epoch", renew)
    await hub._poll_database()
    assert renewed == []
    assert feed.epoch == "aaaaaaaa"

    # A sequence behind where the feed already was before the read: the database went back.
    async def states_gone_back(ids: list[int]) -> dict[int, ChannelState]:
        return {7: ChannelState(last_sequence=5, is_active=True, visibility="public", epoch="aaaaaaaa")}

    monkeypatch.setattr(history, "afetch_channel_states", states_gone_back)
    await hub._poll_database()
    assert renewed == [7]
