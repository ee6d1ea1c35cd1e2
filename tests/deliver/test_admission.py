"""Cheap admission: an anonymous live reader of a public channel needs no database round trip.

In-process: ``admit_from_directory`` runs on the event loop, where any database
access raises ``SynchronousOnlyOperation``, so an admission that succeeds here
touched no database. Everything else falls back to ``authorize``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from events.deliver.consumer import StreamRequest, admit_from_directory
from events.deliver.relay import Relay, get_relay
from events.models import Channel
from events.provisioning import upsert_channel
from events.publish.store import apublish
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.django_db(transaction=True)


def request_for(*slugs: str, **changes: object) -> StreamRequest:
    fields: dict[str, object] = {
        "slugs": list(slugs),
        "cursor": None,
        "token": None,
        "authorization": None,
        "session_key": None,
        "origin": None,
        "own_origin": "http://127.0.0.1",
    }
    fields.update(changes)
    return StreamRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = get_relay()
    yield relay
    await relay.stop()


async def live_channel(relay: Relay, slug: str, visibility: str = "public") -> Channel:
    channel = (await sync_to_async(upsert_channel)(slug, visibility=visibility))[0]
    await relay.open_feed(channel.pk, channel.slug)
    relay.directory.remember([channel])
    return channel


async def test_a_public_live_reader_is_admitted_from_the_feed_without_the_database(relay: Relay) -> None:
    channel = await live_channel(relay, "directory-news")
    await apublish(channel.slug, "one")
    await apublish(channel.slug, "two")
    feed = relay.feeds[channel.pk]
    # The relay's receive loop runs in this loop.
    await until(lambda: feed.position >= 2, what="the feed at 2")
    admitted = admit_from_directory(request_for(channel.slug))
    assert admitted is not None
    assert admitted.positions == {channel.pk: 2}
    assert [c.slug for c in admitted.channels] == [channel.slug]
    assert admitted.resets == {}
    assert admitted.expires_at is None
    assert not admitted.history


@pytest.mark.parametrize(
    "changes",
    [{"cursor": "1"}, {"rewind": 3}, {"token": "t"}, {"authorization": "Bearer k"}, {"session_key": "s"}],
)
async def test_anything_but_an_anonymous_live_reader_goes_to_the_database(
    relay: Relay, changes: dict[str, object]
) -> None:
    channel = await live_channel(relay, f"directory-{len(changes)}-{next(iter(changes))}")
    assert admit_from_directory(request_for(channel.slug, **changes)) is None


async def test_private_unknown_cold_and_stale_channels_go_to_the_database(relay: Relay) -> None:
    public = await live_channel(relay, "directory-public")
    private = await live_channel(relay, "directory-private", visibility="private")
    assert admit_from_directory(request_for(private.slug)) is None  # never remembered
    assert admit_from_directory(request_for(public.slug, "directory-unknown")) is None
    cold = (await sync_to_async(upsert_channel)("directory-cold"))[0]
    relay.directory.remember([cold])  # remembered, but no live feed here to start from
    assert admit_from_directory(request_for(cold.slug)) is None
    with override_settings(PUSHSITE={"RELAY_POLL_SECONDS": 0.0}):
        assert admit_from_directory(request_for(public.slug)) is None


async def test_a_channel_made_private_is_refused_to_anonymous_readers_within_a_poll(
    server: ServerProcess, site: Site
) -> None:
    slug = f"directory-turns-private-{server.port}"
    await asyncio.to_thread(site.create_channels, slug)
    async with Subscriber(f"{server.url}/events/{slug}/") as first:
        await first.opened()  # the feed is live and the channel is in the directory
        await asyncio.to_thread(site.manage, "create_channel", slug, "--visibility", "private")

        async def status_of_a_new_reader() -> int:
            async with Subscriber(f"{server.url}/events/{slug}/") as reader:
                return reader.status

        # RELAY_POLL_SECONDS is 0.5 s on the test server.
        await eventually(
            status_of_a_new_reader, lambda status: status == 404, within=5, what="a new reader's status"
        )


async def test_the_poll_keeps_a_public_channel_fresh_with_its_current_row(relay: Relay) -> None:
    channel = await live_channel(relay, "directory-polled")
    long_ago = 0.0
    relay.directory.remember([channel], now=long_ago)  # as if admitted long before the poll
    assert admit_from_directory(request_for(channel.slug)) is None  # lapsed
    await sync_to_async(Channel.objects.filter(pk=channel.pk).update)(
        allowed_origins=["https://site.example"]
    )
    await relay._poll_database()
    admitted = admit_from_directory(request_for(channel.slug, origin="https://site.example"))
    assert admitted is not None  # fresh again, with the row as the poll read it
    assert admitted.allow_origin == "https://site.example"
