"""NUL and lone surrogates against a real server on PostgreSQL: a 400 from every family, never a 503.

PostgreSQL's ``jsonb`` and text columns refuse ``U+0000``; before events/publish/validate.py
such a body reached the database and came back as "database not available" with
``Retry-After``. Each family is asked over HTTP, as a client would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, Site
from tests.support.services import PostgresDatabase

pytestmark = pytest.mark.system

SLUG = "pg-hostile"
ROOM = "pg-hostile-room"
NUL = '"a\\u0000b"'
SURROGATE = '"a\\ud800b"'


@dataclass
class PgSite:
    server: ServerProcess
    key: str
    staff: httpx.Client


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory, prepared_database: PostgresDatabase) -> Iterator[PgSite]:
    workdir: Path = tmp_path_factory.mktemp("pg-hostile")
    site = Site(
        workdir=workdir, database_url=prepared_database.url, settings={"PUBLISH_RATE_MESSAGES": "100000"}
    )
    key = (
        site.shell(
            "from django.contrib.auth.models import User\n"
            "from events.models import Kind\n"
            "from events.provisioning import create_api_key, upsert_channel\n"
            f"upsert_channel({SLUG!r}); upsert_channel({ROOM!r}, kind=Kind.CHAT)\n"
            "User.objects.filter(username='pg-mod').delete()\n"
            "User.objects.create_user('pg-mod', password='pg-mod-password', is_staff=True)\n"
            "print(create_api_key('pg-hostile', all_channels=True)[1])\n"
        )
        .strip()
        .splitlines()[-1]
    )
    server = ServerProcess(site, name="pg-hostile").start()
    staff = httpx.Client(base_url=server.url, timeout=10)
    login_page = staff.get("/accounts/login/")
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text)
    assert form_token is not None, login_page.text[:500]
    logged_in = staff.post(
        "/accounts/login/",
        data={
            "username": "pg-mod",
            "password": "pg-mod-password",
            "csrfmiddlewaretoken": form_token.group(1),
        },
    )
    assert logged_in.status_code == 302, logged_in.text[:500]
    try:
        yield PgSite(server=server, key=key, staff=staff)
    finally:
        staff.close()
        server.stop()


def history(pg: PgSite, slug: str) -> list[dict[str, object]]:
    response = httpx.get(f"{pg.server.url}/api/channels/{slug}/messages?limit=1000", timeout=10)
    assert response.status_code == 200, response.text
    messages: list[dict[str, object]] = response.json()["messages"]
    return messages


def assert_400(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert "retry-after" not in response.headers
    body = response.json()
    assert body["error"] == "invalid"
    assert fragment in body["detail"], body["detail"]


@pytest.mark.parametrize(
    ("value", "fragment"), [(NUL, "U+0000"), (SURROGATE, "lone surrogate")], ids=["NUL", "surrogate"]
)
def test_every_family_refuses_it_on_postgresql(pg: PgSite, value: str, fragment: str) -> None:
    bearer = {"Authorization": f"Bearer {pg.key}"}
    before = history(pg, SLUG)
    url = pg.server.url

    publish = httpx.post(
        f"{url}/api/channels/{SLUG}/messages", content='{"data": ' + value + "}", headers=bearer, timeout=10
    )
    assert_400(publish, fragment)

    ndjson = httpx.post(
        f"{url}/api/channels/{SLUG}/stream",
        content=('{"data": ' + value + "}\n").encode(),
        headers={**bearer, "Content-Type": "application/x-ndjson"},
        timeout=10,
    )
    assert_400(ndjson, fragment)
    sse = httpx.post(
        f"{url}/api/channels/{SLUG}/stream",
        content=f"event: token\ndata: {value}\n\n".encode(),
        headers={**bearer, "Content-Type": "text/event-stream"},
        timeout=10,
    )
    assert_400(sse, fragment)

    token = httpx.post(
        f"{url}/api/tokens",
        content=f'{{"channels": ["{SLUG}"], "subject": {value}}}',
        headers=bearer,
        timeout=10,
    )
    assert_400(token, fragment)

    csrf = {"X-CSRFToken": pg.staff.cookies["csrftoken"], "Content-Type": "application/json"}
    chat = pg.staff.post(f"/rooms/{ROOM}/messages", content='{"text": ' + value + "}", headers=csrf)
    assert_400(chat, fragment)
    # A mute is a row of its own (a text column): the label must not reach it either.
    mute = pg.staff.post(
        f"/rooms/{ROOM}/mute",
        content='{"author": "user:x' + value.strip('"') + '", "minutes": 5}',
        headers=csrf,
    )
    assert_400(mute, fragment)

    added = history(pg, SLUG)[len(before) :]
    # Only the two streams' failed ends: no part, no message.
    assert [message["event"] for message in added] == ["pushsite.stream.end"] * 2
    assert all(message["data"]["status"] == "failed" for message in added)  # type: ignore[index]
    assert history(pg, ROOM) == []


def test_raw_nul_in_streamed_text_is_refused_on_postgresql(pg: PgSite) -> None:
    response = httpx.post(
        f"{pg.server.url}/api/channels/{SLUG}/stream",
        content=b"data: plain \x00 text\n\n",
        headers={"Authorization": f"Bearer {pg.key}", "Content-Type": "text/event-stream"},
        timeout=10,
    )
    assert_400(response, "U+0000")
    assert response.json()["status"] == "failed"


def test_an_escaped_backslash_before_u0000_is_ordinary_text_on_postgresql(pg: PgSite) -> None:
    response = httpx.post(
        f"{pg.server.url}/api/channels/{SLUG}/messages",
        content=json.dumps({"data": "C:\\u0000 is a path, not a NUL"}),
        headers={"Authorization": f"Bearer {pg.key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"] == "C:\\u0000 is a path, not a NUL"
