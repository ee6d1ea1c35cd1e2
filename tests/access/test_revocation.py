"""Access lost while connected ends the stream within PUSHSITE_REVOCATION_SECONDS (1 s here)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest

from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.write_paths import server_on_each_write_path

__all__ = ["server_on_each_write_path"]  # revocation and token expiry, on both write paths

BOUND = 4.0  # REVOCATION_SECONDS (1) + the housekeeping tick (1) + slack for a loaded machine
_names = itertools.count()


def make_user(site: Site, *, member_of: str | None = None) -> tuple[str, str]:
    name = f"reader{next(_names)}"
    password = "a-long-test-password-42"
    code = (
        "from django.contrib.auth.models import User\n"
        f"u = User.objects.create_user({name!r}, password={password!r}, is_staff=False)\n"
    )
    if member_of:
        code += f"from events.models import Channel\nChannel.objects.get(slug={member_of!r}).members.add(u)\n"
    site.shell(code)
    return name, password


def log_in(server: ServerProcess, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=10)
    client.get("/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{server.url}/accounts/login/"},
    )
    assert "sessionid" in client.cookies, response.text[:500]
    return client


async def ends_with_revocation(subscriber: Subscriber) -> float:
    started = time.monotonic()
    closing = await subscriber.until_closed(timeout=BOUND + 2)
    assert [event.event for event in closing] == ["pushsite.close"]
    assert json.loads(closing[0].data)["reason"] == "access revoked"
    return time.monotonic() - started


async def session_stream(server: ServerProcess, client: httpx.Client, slug: str) -> Subscriber:
    cookie = f"sessionid={client.cookies['sessionid']}"
    subscriber = Subscriber(f"{server.url}/events/{slug}/", headers={"Cookie": cookie})
    await subscriber.__aenter__()
    assert subscriber.status == 200
    await subscriber.opened()
    return subscriber


async def test_logging_out_ends_the_stream(server: ServerProcess, site: Site) -> None:
    name, password = await asyncio.to_thread(make_user, site)
    client = await asyncio.to_thread(log_in, server, name, password)
    subscriber = await session_stream(server, client, "members")
    await asyncio.to_thread(
        client.post,
        "/accounts/logout/",
        data={"csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{server.url}/"},
    )
    elapsed = await ends_with_revocation(subscriber)
    await subscriber.close()
    print(f"logged out: stream ended after {elapsed:.1f}s")
    assert elapsed < BOUND
    async with Subscriber(
        f"{server.url}/events/members/",
        headers={"Cookie": f"sessionid={client.cookies.get('sessionid', 'gone')}"},
    ) as again:
        assert again.status == 404  # logged out: the channel is hidden again


async def test_deactivating_the_user_ends_the_stream(server: ServerProcess, site: Site) -> None:
    name, password = await asyncio.to_thread(make_user, site)
    client = await asyncio.to_thread(log_in, server, name, password)
    subscriber = await session_stream(server, client, "members")
    await asyncio.to_thread(
        site.shell,
        f"from django.contrib.auth.models import User; User.objects.filter(username={name!r}).update(is_active=False)",
    )
    assert await ends_with_revocation(subscriber) < BOUND
    await subscriber.close()


async def test_removal_from_a_private_channel_ends_the_stream(server: ServerProcess, site: Site) -> None:
    name, password = await asyncio.to_thread(make_user, site, member_of="private-room")
    client = await asyncio.to_thread(log_in, server, name, password)
    subscriber = await session_stream(server, client, "private-room")
    await asyncio.to_thread(
        site.shell,
        "from events.models import Channel; from django.contrib.auth.models import User\n"
        f"Channel.objects.get(slug='private-room').members.remove(User.objects.get(username={name!r}))",
    )
    assert await ends_with_revocation(subscriber) < BOUND
    await subscriber.close()


async def test_revoking_the_api_key_ends_the_stream(server: ServerProcess, site: Site) -> None:
    secret = await asyncio.to_thread(site.create_api_key, "revoked-soon", "private-room")
    async with Subscriber(
        f"{server.url}/events/private-room/", headers={"Authorization": f"Bearer {secret}"}
    ) as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        await asyncio.to_thread(
            site.shell,
            "from events.models import ApiKey; ApiKey.objects.filter(name='revoked-soon').update(is_active=False)",
        )
        assert await ends_with_revocation(subscriber) < BOUND


async def test_making_a_channel_private_ends_anonymous_streams(server: ServerProcess, site: Site) -> None:
    slug = f"turns-private-{next(_names)}"
    await asyncio.to_thread(site.create_channels, slug)
    async with Subscriber(f"{server.url}/events/{slug}/") as subscriber:
        await subscriber.opened()
        await asyncio.to_thread(site.manage, "create_channel", slug, "--visibility", "private")
        assert await ends_with_revocation(subscriber) < BOUND + 1  # the poll sees the visibility first


@pytest.mark.parametrize("slug", ["members", "private-room"])
async def test_members_keep_their_stream(server: ServerProcess, site: Site, slug: str) -> None:
    # The control: the same checks leave a reader who still has access alone.
    name, password = await asyncio.to_thread(make_user, site, member_of="private-room")
    client = await asyncio.to_thread(log_in, server, name, password)
    subscriber = await session_stream(server, client, slug)
    with pytest.raises(TimeoutError):
        await subscriber.until_closed(timeout=BOUND)
    await subscriber.close()


# --- tokens are bound to the key that minted them; mixed credentials expire separately ---


def mint_with_key(server: ServerProcess, secret: str, slug: str, ttl: int = 60) -> str:
    response = httpx.post(
        f"{server.url}/api/tokens",
        json={"channels": [slug], "ttl": ttl},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def test_revoking_the_minting_key_ends_its_token_streams_and_refuses_new_ones(
    server: ServerProcess, site: Site
) -> None:
    name = f"minter{next(_names)}"
    secret = await asyncio.to_thread(site.create_api_key, name, "private-room")
    token = await asyncio.to_thread(mint_with_key, server, secret, "private-room")
    url = f"{server.url}/events/private-room/?token={token}"
    async with Subscriber(url) as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        await asyncio.to_thread(
            site.shell,
            f"from events.models import ApiKey; ApiKey.objects.filter(name={name!r}).update(is_active=False)",
        )
        assert await ends_with_revocation(subscriber) < BOUND
    async with Subscriber(url) as again:
        assert again.status == 404  # refused as if it did not exist (docs/security.md)
    history = await asyncio.to_thread(
        httpx.get, f"{server.url}/api/channels/private-room/messages", params={"token": token}
    )
    assert history.status_code == 404


async def test_an_expiring_token_ends_what_only_it_allowed_despite_a_session(
    server: ServerProcess, site: Site
) -> None:
    # A logged-in user (not a member of private-room) also holds a token for it.
    name, password = await asyncio.to_thread(make_user, site)
    client = await asyncio.to_thread(log_in, server, name, password)
    token = (await asyncio.to_thread(site.manage, "mint_token", "private-room", "--ttl", "2")).strip()
    cookie = f"sessionid={client.cookies['sessionid']}"
    started = time.monotonic()
    async with Subscriber(
        f"{server.url}/events/?channel=members&channel=private-room&token={token}", headers={"Cookie": cookie}
    ) as subscriber:
        assert subscriber.status == 200
        await subscriber.opened()
        closing = await subscriber.until_closed(timeout=6)
    assert json.loads(closing[-1].data)["reason"] == "token expired"
    assert time.monotonic() - started < 5


async def test_a_channel_the_session_allows_stays_when_the_token_expires(
    server: ServerProcess, site: Site
) -> None:
    name, password = await asyncio.to_thread(make_user, site)
    client = await asyncio.to_thread(log_in, server, name, password)
    other = f"token-for-members-{next(_names)}"
    await asyncio.to_thread(site.create_channel, other, "--visibility", "authenticated")
    token = (await asyncio.to_thread(site.manage, "mint_token", other, "--ttl", "2")).strip()
    cookie = f"sessionid={client.cookies['sessionid']}"
    async with Subscriber(f"{server.url}/events/{other}/?token={token}", headers={"Cookie": cookie}) as kept:
        assert kept.status == 200
        await kept.opened()
        with pytest.raises(TimeoutError):
            await kept.until_closed(timeout=BOUND)
