"""A visitor without access cannot learn which private channels exist, on any read path.

Every surface that takes a channel's slug answers a channel the visitor may not
read exactly as it answers a slug that names nothing: same status, same body
(the slug aside), same headers that matter. A new read path belongs in the
tables below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from events.access.auth import mint_token
from events.models import Visibility
from events.provisioning import upsert_channel
from tests.support import api
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.waiting import eventually

UNKNOWN = "nothing-here"

# Private, authenticated, and a private chat room; each against a slug that names nothing.
HIDDEN = [
    ("private-room", "private"),
    ("members", "authenticated"),
]


def _normalised(status: int, body: bytes, slug: str) -> tuple[int, str]:
    return status, body.decode(errors="replace").replace(slug, "SLUG")


@pytest.fixture(scope="module")
def credentials(site: Site) -> dict[str, str]:
    """Query strings a visitor without access might bring."""
    other = site.manage("mint_token", "pool-0", "--ttl", "600").strip()
    return {"no credentials": "", "token for another channel": urlencode({"token": other})}


STREAM_PATHS: list[tuple[str, Callable[[str], str]]] = [
    ("sse", lambda slug: f"/events/{slug}/"),
    ("ndjson", lambda slug: f"/events/{slug}/?format=ndjson"),
    ("multi, hidden first", lambda slug: f"/events/?channel={slug}&channel=pool-0"),
    ("history", lambda slug: f"/api/channels/{slug}/messages"),
    ("embed page", lambda slug: f"/embed/{slug}/"),
    ("channel page", lambda slug: f"/channels/{slug}/"),
]


@pytest.mark.parametrize(("path_name", "path"), STREAM_PATHS, ids=[p[0] for p in STREAM_PATHS])
@pytest.mark.parametrize(("slug", "visibility"), HIDDEN, ids=[h[1] for h in HIDDEN])
def test_a_hidden_channel_answers_like_one_that_does_not_exist(
    server: ServerProcess,
    credentials: dict[str, str],
    path_name: str,
    path: Callable[[str], str],
    slug: str,
    visibility: str,
) -> None:
    for name, query in credentials.items():
        answers = []
        for target in (slug, UNKNOWN):
            url = server.url + path(target)
            if query:
                url += ("&" if "?" in url else "?") + query
            response = httpx.get(url, timeout=10)
            answers.append(
                (
                    _normalised(response.status_code, response.content, target),
                    response.headers.get("content-type"),
                )
            )
        assert answers[0] == answers[1], f"{path_name} with {name} tells {visibility} channels apart"
        assert answers[0][0][0] == 404


async def test_the_first_refused_channel_of_a_stream_never_depends_on_a_later_one(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        hidden = await client.get("/events/?channel=private-room&channel=nope-2")
        unknown = await client.get("/events/?channel=nope-1&channel=nope-2")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["detail"].replace("private-room", "X") == unknown.json()["detail"].replace(
        "nope-1", "X"
    )


async def test_bad_credentials_are_refused_before_any_channel_is_looked_up(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        for query in ("token=tampered", "token=" + "x" * 40):
            hidden = await client.get(f"/events/private-room/?{query}")
            unknown = await client.get(f"/events/{UNKNOWN}/?{query}")
            assert (hidden.status_code, hidden.json()) == (unknown.status_code, unknown.json())
            assert hidden.status_code == 403
        hidden = await client.get(
            "/api/channels/private-room/messages", headers={"Authorization": "Bearer psk_nope"}
        )
        unknown = await client.get(
            f"/api/channels/{UNKNOWN}/messages", headers={"Authorization": "Bearer psk_nope"}
        )
        assert (hidden.status_code, hidden.json()) == (unknown.status_code, unknown.json())
        assert hidden.status_code == 401


def comparable(page: bytes) -> bytes:
    """A page without its CSRF token, which is masked afresh on every response."""
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b"", page)


@pytest.mark.django_db
def test_a_logged_in_non_member_sees_no_private_channel_or_room(client: Client) -> None:
    upsert_channel("vault", visibility=Visibility.PRIVATE)
    upsert_channel("back-room", visibility=Visibility.PRIVATE, kind="chat")
    client.force_login(User.objects.create_user("outsider", password="pw"))
    for hidden, unknown in [
        ("/channels/vault/", "/channels/nope/"),
        ("/embed/vault/", "/embed/nope/"),
        ("/rooms/back-room/", "/rooms/nope/"),
        ("/api/channels/vault/messages", "/api/channels/nope/messages"),
        ("/rooms/back-room/presence", "/rooms/nope/presence"),
    ]:
        a, b = client.get(hidden), client.get(unknown)
        assert (a.status_code, comparable(a.content).replace(b"back-room", b"X").replace(b"vault", b"X")) == (
            b.status_code,
            comparable(b.content).replace(b"nope", b"X"),
        ), hidden
        assert a.status_code == 404
    assert b"back-room" not in client.get("/rooms/").content
    assert b"vault" not in client.get("/").content


@pytest.mark.django_db
def test_readers_with_access_still_get_the_pages(client: Client) -> None:
    vault = upsert_channel("vault", visibility=Visibility.PRIVATE)[0]
    token = mint_token([vault], ttl=60)
    assert client.get(f"/embed/vault/?token={token}").status_code == 200
    member = User.objects.create_user("member", password="pw")
    vault.members.add(member)
    client.force_login(member)
    assert client.get("/channels/vault/").status_code == 200
    assert client.get("/embed/vault/").status_code == 200


async def test_public_metrics_name_no_channel_that_is_not_public(
    server: ServerProcess, site: Site, api_key: str
) -> None:
    await api.publish(server.url, api_key, "private-room", "secret")
    await api.publish(server.url, api_key, "members", "secret")
    await api.publish(server.url, api_key, "pool-1", "public")
    token = site.manage("mint_token", "private-room", "--ttl", "60").strip()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        Subscriber(f"{server.url}/events/private-room/?token={token}") as subscriber,
    ):
        await subscriber.opened()

        async def scrape() -> str:
            return (await client.get("/metrics")).text

        # The open event is written as the stream joins its feed: wait for the count.
        text = await eventually(
            scrape,
            lambda text: 'pushsite_feed_connections{channel="(restricted)"} 1.0' in text,
            within=5,
            what="the private stream counted under (restricted)",
        )
    assert "private-room" not in text
    assert "members" not in text
    assert 'pushsite_messages_published_total{channel="pool-1"}' in text
    assert 'pushsite_messages_published_total{channel="(restricted)"}' in text


def test_the_restricted_label_sums_every_hidden_channel() -> None:
    from events.ops.collectors import by_public_label

    assert by_public_label({1: 3, 2: 4, 3: 5}, {1: "news"}) == {"news": 3, "(restricted)": 9}
    assert json.dumps(by_public_label({}, {})) == "{}"
