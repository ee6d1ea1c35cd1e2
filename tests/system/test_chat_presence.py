"""Chat presence across two server processes (real Redis and PostgreSQL), and after one dies."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.services import PostgresDatabase
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually
from tests.system.conftest import Cluster, start_cluster

pytestmark = pytest.mark.system

ROOM = "sys-room"
REFRESH_SECONDS = 0.5


@pytest.fixture(scope="module")
def presence_cluster(
    tmp_path_factory: pytest.TempPathFactory, prepared_database: PostgresDatabase
) -> Iterator[Cluster]:
    running = start_cluster(
        tmp_path_factory.mktemp("presence"),
        prepared_database,
        pushsite={"PRESENCE_REFRESH_SECONDS": str(REFRESH_SECONDS)},
    )
    yield running
    running.stop()
    running.redis.stop()


def sessions(cluster: Cluster, *names: str) -> dict[str, str]:
    """A room, and a logged-in session cookie per user name."""
    out = cluster.site.shell(
        "from django.contrib.auth.models import User\n"
        "from django.test import Client\n"
        "from events.provisioning import upsert_channel\n"
        f"upsert_channel({ROOM!r}, kind='chat')\n"
        f"for name in {list(names)!r}:\n"
        "    user, _ = User.objects.get_or_create(username=name)\n"
        "    client = Client(); client.force_login(user)\n"
        "    print(name, client.cookies['sessionid'].value)\n"
    )
    return dict(line.split() for line in out.strip().splitlines()[-len(names) :])


def stream(server_url: str, session: str | None = None) -> Subscriber:
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    return Subscriber(f"{server_url}/events/{ROOM}/", headers=headers)


async def names_at(server_url: str) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as client:
        body: dict[str, Any] = (await client.get(f"{server_url}/rooms/{ROOM}/presence")).json()
    return [person["name"] for person in body["people"]]


async def next_presence(subscriber: Subscriber) -> list[str]:
    while True:
        event = await subscriber.next_event(timeout=5)
        if event.event == "presence":
            return [person["name"] for person in json.loads(event.data)["data"]["people"]]


async def test_presence_is_shared_by_both_processes_and_survives_a_dead_one(
    presence_cluster: Cluster,
) -> None:
    cluster = presence_cluster
    cookies = sessions(cluster, "ann", "ben")
    a, b = cluster.a.url, cluster.b.url
    async with stream(a) as watcher:  # anonymous: sees presence, is not in it
        await watcher.opened()
        async with stream(a, cookies["ann"]) as ann:
            await ann.opened()
            assert await next_presence(watcher) == ["ann"]
            async with stream(b, cookies["ben"]) as ben, stream(b, cookies["ben"]) as ben_again:
                await ben.opened()
                await ben_again.opened()
                for url in (a, b):
                    await eventually(
                        functools.partial(names_at, url), lambda n: n == ["ann", "ben"], within=3, what=url
                    )
                # Two streams of one person count once; closing one leaves them here.
                await ben_again.close()
                await eventually(lambda: names_at(a), lambda n: n == ["ann", "ben"], within=1, what="A")
            # The other process saw ben leave, through the channel layer.
            assert await eventually(
                lambda: next_presence(watcher), lambda n: n == ["ann"], within=3, what="presence event"
            )
            assert await names_at(b) == ["ann"]
        await eventually(
            lambda: next_presence(watcher), lambda n: n == [], within=3, what="presence after ann left"
        )

        # B dies without closing anything: its rows expire, and A, which has
        # only an anonymous reader in the room, notices and says so.
        ben = stream(b, cookies["ben"])
        await ben.__aenter__()
        await ben.opened()
        assert await next_presence(watcher) == ["ben"]
        cluster.b.kill()
        await eventually(
            lambda: next_presence(watcher),
            lambda n: n == [],
            within=3 * REFRESH_SECONDS + 5,
            what="presence after B died",
        )
        assert await names_at(a) == []
        with contextlib.suppress(httpx.HTTPError):
            await ben.close()
