"""Subscribe tokens: minting (API and helper), verification, and every way a token is wrong."""

from __future__ import annotations

import asyncio
import json
import time
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.core.management import CommandError, call_command
from django.test import AsyncClient, override_settings

from events.access.auth import (
    TOKEN_SALT,
    Reader,
    bearer_secret,
    check_read,
    mint_token,
    token_expiry,
    verify_token,
)
from events.exceptions import ChannelNotFound, InvalidInput, PermissionDenied, TokenExpired
from events.models import Channel, Visibility
from events.provisioning import create_api_key, upsert_channel
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber

pytestmark = pytest.mark.django_db


@pytest.fixture
def vault() -> Channel:
    return upsert_channel("vault", visibility=Visibility.PRIVATE)[0]


def test_a_valid_token_grants_its_channels(vault: Channel) -> None:
    grant = verify_token(mint_token([vault], ttl=60, subject="user-7"))
    assert grant.channels == frozenset({(vault.pk, "vault")})
    assert grant.key_id is None
    assert grant.subject == "user-7"
    assert 55 < grant.expires_at - time.time() <= 60
    check_read(vault, Reader(grant=grant))


def test_an_expired_token_is_refused_with_its_own_code() -> None:
    token = signing.dumps({"ch": [[1, "vault"]], "exp": int(time.time()) - 1}, salt=TOKEN_SALT)
    with pytest.raises(TokenExpired, match="expired") as caught:
        verify_token(token)
    assert caught.value.status == 403
    assert caught.value.code == "token_expired"


def test_a_tampered_token_is_refused(vault: Channel) -> None:
    token = mint_token([vault], ttl=60)
    signature = token.rpartition(":")[2]
    forged = signing.dumps({"ch": [[vault.pk, "vault"], [2, "everything"]], "exp": 2**40}, salt=TOKEN_SALT)
    forged = forged.rpartition(":")[0]
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        f"{forged}:{signature}",
        "garbage",
        "",
    ):
        with pytest.raises(PermissionDenied, match="not valid"):
            verify_token(bad)


def test_a_token_signed_for_something_else_is_refused() -> None:
    other_salt = signing.dumps(
        {"ch": [[1, "vault"]], "exp": int(time.time()) + 60}, salt="django.contrib.sessions"
    )
    with pytest.raises(PermissionDenied, match="not valid"):
        verify_token(other_salt)


def test_a_token_for_another_channel_does_not_open_this_one(vault: Channel) -> None:
    other, _ = upsert_channel("other", visibility=Visibility.PRIVATE)
    grant = verify_token(mint_token([other], ttl=60))
    with pytest.raises(ChannelNotFound, match="No active channel is called 'vault'"):
        check_read(vault, Reader(grant=grant))


def test_ttl_is_capped_by_the_setting(settings: object, vault: Channel) -> None:
    settings.PUSHSITE = {"TOKEN_MAX_AGE_SECONDS": 30}  # type: ignore[attr-defined]  # pytest-django's wrapper declares no settings
    grant = verify_token(mint_token([vault], ttl=999))
    assert grant.expires_at - time.time() <= 30


def test_a_token_from_before_channel_identities_is_refused() -> None:
    slugs_only = signing.dumps({"ch": ["vault"], "exp": int(time.time()) + 60, "sub": ""}, salt=TOKEN_SALT)
    with pytest.raises(PermissionDenied, match="fresh one"):
        verify_token(slugs_only)


def test_a_channel_recreated_with_the_same_slug_is_another_channel(vault: Channel) -> None:
    grant = verify_token(mint_token([vault], ttl=60))
    vault.delete()
    again, _ = upsert_channel("vault", visibility=Visibility.PRIVATE)
    assert (again.pk, again.slug) not in grant.channels
    # Refused as if it did not exist (docs/security.md, "What outsiders cannot learn").
    with pytest.raises(PermissionDenied, match="No active channel is called 'vault'"):
        check_read(again, Reader(grant=grant))


def test_a_token_lives_only_as_long_as_its_key_allows(vault: Channel) -> None:
    key, _ = create_api_key("backend", ["vault"])
    grant = verify_token(mint_token([vault], ttl=60, key=key))
    assert grant.key_id == key.pk
    check_read(vault, Reader(grant=grant))

    key.channels.clear()  # narrowed: the token narrows with it
    with pytest.raises(PermissionDenied):
        check_read(vault, Reader(grant=grant))
    key.channels.add(vault)
    check_read(vault, Reader(grant=grant))

    key.is_active = False  # revoked: refused at once, no cache in between
    key.save()
    with pytest.raises(PermissionDenied):
        check_read(vault, Reader(grant=grant))
    key.delete()
    with pytest.raises(PermissionDenied):
        check_read(vault, Reader(grant=grant))


# --- POST /api/tokens -------------------------------------------------------------------


async def post_token(body: object, key: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await AsyncClient().post(
        "/api/tokens", json.dumps(body), content_type="application/json", headers=headers
    )
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
async def test_the_tokens_api_mints_for_channels_the_key_may_use() -> None:
    await asyncio.to_thread(lambda: upsert_channel("vault", visibility=Visibility.PRIVATE))
    await asyncio.to_thread(lambda: upsert_channel("other", visibility=Visibility.PRIVATE))
    _, key = await asyncio.to_thread(create_api_key, "backend", ["vault"])
    status, body = await post_token({"channels": ["vault"], "ttl": 120, "subject": "user-1"}, key)
    assert status == 201
    assert body["channels"] == ["vault"]
    assert str(body["expires_at"]).endswith("Z")
    assert verify_token(str(body["token"])).subject == "user-1"

    assert (await post_token({"channels": ["other"]}, key))[0] == 403
    assert (await post_token({"channels": ["vault"]}, None))[0] == 401
    assert (await post_token({"channels": ["nope"]}, key))[0] == 404
    bad: object
    for bad in (
        {"channels": []},
        {"channels": "vault"},
        {"channels": ["vault"], "ttl": 0},
        {"channels": ["vault"], "ttl": 10**9},
        {"channels": ["vault"], "ttl": "60"},
        {"channels": ["vault"], "scope": "all"},
        ["vault"],
    ):
        status, body = await post_token(bad, key)
        assert status == 400, bad
        assert body["error"] == "invalid"
    assert (await AsyncClient().get("/api/tokens")).status_code == 405


# --- against a real server ------------------------------------------------------------------


async def test_a_stream_closes_when_its_token_expires(server: ServerProcess, site: Site) -> None:
    # Five seconds: minting starts a Django process, which takes seconds on a busy
    # machine, and the stream must open before the token expires.
    token = (await asyncio.to_thread(site.manage, "mint_token", "private-room", "--ttl", "5")).strip()
    minted = time.monotonic()
    async with Subscriber(f"{server.url}/events/private-room/?token={token}") as subscriber:
        await subscriber.opened()
        closing = await subscriber.until_closed(timeout=10)
    assert [event.event for event in closing] == ["pushsite.close"]
    assert json.loads(closing[0].data)["reason"] == "token expired"
    # Closed at the expiry (at most 5 s after minting returned), not at some later sweep.
    assert time.monotonic() - minted < 6.5
    # Reconnecting with the same token is refused with a code the client acts on.
    async with Subscriber(f"{server.url}/events/private-room/?token={token}") as again:
        assert again.status == 403
        assert (await again.body())["error"] == "token_expired"
    assert token not in server.log()


# --- other Authorization schemes; mixed credentials ---------------------------------------


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Digest username=x", None),
        ("Bearer", ""),
        ("Bearer psk_abc", "psk_abc"),
        ("bearer  psk_abc ", "psk_abc"),
    ],
)
def test_only_the_bearer_scheme_carries_a_key(header: str | None, secret: str | None) -> None:
    assert bearer_secret(header) == secret


def test_the_token_expiry_applies_when_a_channel_needs_the_token(vault: Channel) -> None:
    members, _ = upsert_channel("members", visibility=Visibility.AUTHENTICATED)
    user = User.objects.create_user("reader")
    grant = verify_token(mint_token([vault, members], ttl=60))
    assert token_expiry([vault, members], Reader(user=user, grant=grant)) == grant.expires_at
    assert token_expiry([members], Reader(user=user, grant=grant)) is None
    assert token_expiry([vault], Reader(grant=grant)) == grant.expires_at
    vault.members.add(user)
    assert token_expiry([vault, members], Reader(user=user, grant=grant)) is None


def test_the_mint_token_command_names_channels_by_identity_and_refuses_unknown_ones(vault: Channel) -> None:
    out = StringIO()
    call_command("mint_token", "vault", "--ttl", "60", stdout=out)
    grant = verify_token(out.getvalue().strip())
    assert grant.channels == frozenset({(vault.pk, "vault")})
    assert grant.key_id is None
    with pytest.raises(CommandError, match="No active channel is called 'nope'"):
        call_command("mint_token", "nope", stdout=StringIO())


@override_settings(PUSHSITE={"TOKEN_MAX_AGE_SECONDS": 600})
def test_mint_token_says_when_it_caps_the_lifetime(vault: Channel) -> None:
    out, err = StringIO(), StringIO()
    call_command("mint_token", "vault", "--ttl", "999999", stdout=out, stderr=err)
    grant = verify_token(out.getvalue().strip())  # stdout is the token alone
    assert grant.expires_at - time.time() <= 600
    assert "--ttl 999999 is above PUSHSITE_TOKEN_MAX_AGE_SECONDS: the token lasts 600 s." in err.getvalue()


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_mint_token_refuses_a_lifetime_under_a_second(vault: Channel, ttl: str) -> None:
    # POST /api/tokens refused such a ttl with a 400; the command printed a token that
    # had already expired, said nothing and exited 0.
    out = StringIO()
    with pytest.raises(CommandError, match=rf"^ttl must be at least 1 second \(got {ttl}\)"):
        call_command("mint_token", "vault", "--ttl", ttl, stdout=out)
    assert out.getvalue() == ""
    with pytest.raises(InvalidInput):
        mint_token([vault], ttl=int(ttl))
