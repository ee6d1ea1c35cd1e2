"""Every credential x every way it can be wrong x every door, against one live server (issue 13).

What should succeed comes from the contract (ARCHITECTURE.md §1 and §4.5,
docs/security.md), written out below as ``expected()`` independently of the
code under test; every request is then made for real and compared. The test
fails on any unauthorized success, any authorized failure, and any 5xx.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import httpx
import pytest
from django.core import signing

from events.access.auth import TOKEN_SALT
from tests.support.servers import ServerProcess, Site

_run = itertools.count()

# Kinds of credential, and the ways one can be wrong.
KINDS = ["key_all", "key_scoped", "token", "staff", "user", "guest"]
VARIANTS = ["valid", "tampered", "expired", "revoked", "mixed", "mixed_basic"]
# Channels, by what they are to the credentials: public, authenticated, the
# private one every credential is about, and a private one none of them names
# (the "other channel": key_scoped, the token and the user do not cover it).
CHANNELS = ["public", "members", "private", "other"]
OPERATIONS = ["sse", "ndjson", "history", "publish", "stream_publish", "mint_token"]
BASIC = "Basic dXNlcjpwYXNzd29yZA=="
PASSWORD = "a-long-test-password-42"

SETUP = """
import json
from django.contrib.auth.models import User
from events.models import Channel
from events.provisioning import create_api_key, upsert_channel
run = {run!r}
slugs = {{}}
for role, visibility in (("public", "public"), ("members", "authenticated"), ("private", "private"),
                         ("other", "private")):
    channel, _ = upsert_channel(f"matrix{{run}}-{{role}}", visibility=visibility)
    slugs[role] = {{"slug": channel.slug, "pk": channel.pk}}
private = Channel.objects.get(slug=slugs["private"]["slug"])
keys = {{
    "key_all": create_api_key(f"matrix{{run}}-all", all_channels=True)[1],
    "key_all_revoked": create_api_key(f"matrix{{run}}-all-revoked", all_channels=True)[1],
    "key_scoped": create_api_key(f"matrix{{run}}-scoped", [private.slug])[1],
    "key_scoped_revoked": create_api_key(f"matrix{{run}}-scoped-revoked", [private.slug])[1],
}}
for name, staff in (("staff", True), ("staff_revoked", True), ("staff_expired", True),
                    ("user", False), ("user_revoked", False), ("user_expired", False)):
    user = User.objects.create_user(f"matrix{{run}}-{{name}}", password={password!r}, is_staff=staff)
    if not staff:
        private.members.add(user)
print(json.dumps({{"slugs": slugs, "keys": keys}}))
"""

REVOKE = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.utils import timezone
from events.models import ApiKey
run = {run!r}
ApiKey.objects.filter(name__in=[f"matrix{{run}}-all-revoked", f"matrix{{run}}-scoped-revoked"]).update(is_active=False)
User.objects.filter(username__in=[f"matrix{{run}}-staff_revoked", f"matrix{{run}}-user_revoked"]).update(is_active=False)
Session.objects.filter(session_key__in={expired!r}).update(expire_date=timezone.now() - timedelta(minutes=1))
"""


@dataclass
class Credentials:
    """What a request carries: headers, cookies, and a token in the query string."""

    authorization: str | None = None
    session: str | None = None
    csrf: str | None = None
    token: str | None = None
    # What the oracle needs to know about each grant in it.
    grants: list[tuple[str, str]] = field(default_factory=list)  # (kind, variant)


@dataclass
class Fixture:
    server: ServerProcess
    slugs: dict[str, str]
    credentials: dict[tuple[str, str], Credentials]


def tamper(value: str) -> str:
    return value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")


def log_in(server: ServerProcess, username: str) -> tuple[str, str]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/accounts/login/")
        client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )
        assert "sessionid" in client.cookies, f"{username} could not log in"
        return client.cookies["sessionid"], client.cookies["csrftoken"]


def mint(server: ServerProcess, secret: str, slug: str) -> str:
    response = httpx.post(
        f"{server.url}/api/tokens",
        json={"channels": [slug], "ttl": 600},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture(scope="module")
def matrix(server: ServerProcess, site: Site) -> Fixture:
    run = f"{next(_run)}x{int(time.time()) % 100000}"
    out = site.shell(SETUP.format(run=run, password=PASSWORD))
    made = json.loads(out.strip().splitlines()[-1])
    slugs = {role: info["slug"] for role, info in made["slugs"].items()}
    keys = made["keys"]
    sessions = {name: log_in(server, f"matrix{run}-{name}") for name in ("staff", "user")}
    for name in ("staff_revoked", "staff_expired", "user_revoked", "user_expired"):
        sessions[name] = log_in(server, f"matrix{run}-{name}")
    token = mint(server, keys["key_scoped"], slugs["private"])
    token_of_revoked_key = mint(server, keys["key_scoped_revoked"], slugs["private"])
    # Signed with the server's key, past its expiry: no waiting for one to run out.
    expired_token = signing.dumps(
        {
            "ch": [[made["slugs"]["private"]["pk"], slugs["private"]]],
            "exp": int(time.time()) - 5,
            "key": None,
        },
        key=site.env()["DJANGO_SECRET_KEY"],
        salt=TOKEN_SALT,
        compress=True,
    )
    expired = [sessions["staff_expired"][0], sessions["user_expired"][0]]
    site.shell(REVOKE.format(run=run, expired=expired))

    def bearer(secret: str) -> str:
        return f"Bearer {secret}"

    c: dict[tuple[str, str], Credentials] = {}
    for kind in ("key_all", "key_scoped"):
        c[kind, "valid"] = Credentials(authorization=bearer(keys[kind]))
        c[kind, "tampered"] = Credentials(authorization=bearer(tamper(keys[kind])))
        c[kind, "revoked"] = Credentials(authorization=bearer(keys[f"{kind}_revoked"]))
    c["token", "valid"] = Credentials(token=token)
    c["token", "tampered"] = Credentials(token=tamper(token))
    c["token", "expired"] = Credentials(token=expired_token)
    c["token", "revoked"] = Credentials(token=token_of_revoked_key)
    for kind in ("staff", "user"):
        session, csrf = sessions[kind]
        c[kind, "valid"] = Credentials(session=session, csrf=csrf)
        c[kind, "tampered"] = Credentials(session=tamper(session), csrf=csrf)
        c[kind, "expired"] = Credentials(
            session=sessions[f"{kind}_expired"][0], csrf=sessions[f"{kind}_expired"][1]
        )
        c[kind, "revoked"] = Credentials(
            session=sessions[f"{kind}_revoked"][0], csrf=sessions[f"{kind}_revoked"][1]
        )
    c["guest", "valid"] = Credentials()
    for (kind, variant), credentials in c.items():
        credentials.grants = [(kind, variant)]

    # Mixed: the credential and a second, valid one of another kind (the union
    # of what each grants); mixed_basic: the credential and a Basic header from
    # a password-protected proxy (no credential at all).
    user_session, user_csrf = sessions["user"]
    for kind in ("key_all", "key_scoped", "token", "guest"):
        base = c[kind, "valid"]
        c[kind, "mixed"] = replace(
            base, session=user_session, csrf=user_csrf, grants=[*base.grants, ("user", "valid")]
        )
    for kind in ("staff", "user"):
        base = c[kind, "valid"]
        c[kind, "mixed"] = replace(base, token=token, grants=[*base.grants, ("token", "valid")])
    for kind in ("token", "staff", "user", "guest"):
        base = c[kind, "valid"]
        c[kind, "mixed_basic"] = replace(base, authorization=BASIC, grants=[*base.grants, ("basic", "valid")])
    return Fixture(server=server, slugs=slugs, credentials=c)


# --- the oracle: what the contract allows ---------------------------------------------------


def reads(kind: str, channel: str) -> bool:
    """Whether one valid grant of ``kind`` lets its holder read ``channel``."""
    return {
        "key_all": True,
        "key_scoped": channel == "private",
        "token": channel == "private",
        "staff": True,
        "user": channel in {"public", "members", "private"},  # a member of private, not of other
        "guest": channel == "public",
        "basic": channel == "public",
    }[kind]


def as_valid(kind: str, variant: str) -> tuple[str, bool]:
    """The grant as it counts: (kind, refused-up-front). A bad session is simply no session."""
    if variant in {"valid", "mixed", "mixed_basic"}:
        return kind, False
    if kind in {"staff", "user"}:
        return "guest", False  # tampered, expired or deactivated: anonymous
    if kind == "token" and variant == "revoked":
        return "guest", False  # well formed, but its key is revoked: grants nothing
    # A key that does not authenticate, or a tampered or expired token, is refused.
    return kind, True


def expected(grants: list[tuple[str, str]], operation: str, channel: str) -> bool:
    counted = [as_valid(kind, variant) for kind, variant in grants]
    if operation in {"sse", "ndjson", "history"}:
        if any(refused for _, refused in counted):
            return False
        return channel == "public" or any(reads(kind, channel) for kind, _ in counted)
    keys = [(kind, refused) for kind, refused in counted if kind.startswith("key_")]
    if keys:
        # A request with a key is decided by the key alone (the key path ignores cookies).
        kind, refused = keys[0]
        return not refused and (kind == "key_all" or channel == "private")
    if operation == "publish":
        return ("staff", False) in counted
    return False  # streaming publish and minting take an API key only


# --- the requests ------------------------------------------------------------------------------


def headers_for(credentials: Credentials) -> dict[str, str]:
    headers: dict[str, str] = {}
    if credentials.authorization:
        headers["Authorization"] = credentials.authorization
    cookies = []
    if credentials.session:
        cookies.append(f"sessionid={credentials.session}")
    if credentials.csrf:
        cookies.append(f"csrftoken={credentials.csrf}")
        headers["X-CSRFToken"] = credentials.csrf
    if cookies:
        headers["Cookie"] = "; ".join(cookies)
    return headers


def attempt(client: httpx.Client, operation: str, slug: str, credentials: Credentials) -> int:
    headers = headers_for(credentials)
    params = {"token": credentials.token} if credentials.token else {}
    if operation in {"sse", "ndjson"}:
        if operation == "ndjson":
            params["format"] = "ndjson"
        with client.stream("GET", f"/events/{slug}/", params=params, headers=headers) as response:
            return response.status_code  # leaving the block closes the stream at once
    if operation == "history":
        return client.get(f"/api/channels/{slug}/messages", params=params, headers=headers).status_code
    if operation == "publish":
        body = json.dumps({"event": "matrix", "data": {"probe": True}})
        return client.post(
            f"/api/channels/{slug}/messages",
            params=params,
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        ).status_code
    if operation == "stream_publish":
        return client.post(
            f"/api/channels/{slug}/stream",
            params=params,
            content=b'{"data": "part"}\n',
            headers={**headers, "Content-Type": "application/x-ndjson"},
        ).status_code
    assert operation == "mint_token"
    return client.post(
        "/api/tokens", params=params, json={"channels": [slug], "ttl": 60}, headers=headers
    ).status_code


@pytest.fixture(scope="module")
def client(matrix: Fixture) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=matrix.server.url, timeout=10) as client:
        yield client


CASES = [
    (kind, variant)
    for kind in KINDS
    for variant in VARIANTS
    if not (
        kind.startswith("key_") and variant in {"expired", "mixed_basic"}
    )  # keys do not expire; one header
    and not (kind == "guest" and variant in {"tampered", "expired", "revoked"})  # nothing to spoil
]


@pytest.mark.parametrize(("kind", "variant"), CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_authorization_matrix(matrix: Fixture, client: httpx.Client, kind: str, variant: str) -> None:
    credentials = matrix.credentials[kind, variant]
    wrong = []
    for operation in OPERATIONS:
        for channel in CHANNELS:
            status = attempt(client, operation, matrix.slugs[channel], credentials)
            allowed = expected(credentials.grants, operation, channel)
            succeeded = 200 <= status < 300
            if status >= 500 or succeeded != allowed:
                verdict = "5xx" if status >= 500 else ("UNAUTHORIZED SUCCESS" if succeeded else "refused")
                wrong.append(
                    f"{operation} {channel}: {status} ({verdict}, expected {'2xx' if allowed else '4xx'})"
                )
    assert not wrong, f"{kind}/{variant}:\n" + "\n".join(wrong)


def test_the_matrix_covers_every_kind_variant_door_and_both_outcomes() -> None:
    # The table itself can fail: every kind and variant is in it, and both
    # outcomes occur for every door, so a door that refuses (or admits) all
    # would be caught above.
    assert {kind for kind, _ in CASES} == set(KINDS)
    assert {variant for _, variant in CASES} == set(VARIANTS)
    for operation in OPERATIONS:
        outcomes = {
            expected([(kind, variant), *extra], operation, channel)
            for kind, variant in CASES
            for extra in ([], [("user", "valid")])
            for channel in CHANNELS
        }
        assert outcomes == {True, False}, operation
