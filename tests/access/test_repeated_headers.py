"""A header sent twice means the same on every door: joined with commas, as Django's handler joins it.

The API-key fast path (events/publish/fast_path.py), the streaming publish and the
stream read headers from the ASGI scope themselves; they kept the last of a repeated
header while the Django views (history, the publish view, tokens) saw both. Two
``Authorization`` headers, a wrong key then a right one, were a 201 or a 200 on
those doors and a 401 on the others: the wrong credential was not "refused
outright" (docs/security.md), and the same publish was stored under another
``Idempotency-Key`` depending on the path it took.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from tests.support.servers import ServerProcess, Site

_names = itertools.count()

WRONG = "Bearer psk_00000000_not-a-key-at-all"
DOORS = ["publish_fast", "publish_django", "stream_publish", "sse", "ndjson", "history", "mint_token"]


@pytest.fixture(scope="module")
def slug(site: Site) -> str:
    slug = "repeated-headers"
    site.create_channels(slug)
    return slug


def knock(server: ServerProcess, door: str, slug: str, headers: list[tuple[str, str]]) -> httpx.Response:
    url = server.url
    with httpx.Client(timeout=10) as client:
        if door == "publish_fast":
            return client.post(f"{url}/api/channels/{slug}/messages", content=b'{"data": 1}', headers=headers)
        if door == "publish_django":
            # A cookie sends the request through Django's middleware and view.
            headers = [*headers, ("Cookie", "unrelated=1")]
            return client.post(f"{url}/api/channels/{slug}/messages", content=b'{"data": 1}', headers=headers)
        if door == "stream_publish":
            headers = [*headers, ("Content-Type", "application/x-ndjson")]
            return client.post(f"{url}/api/channels/{slug}/stream", content=b'{"data": 1}\n', headers=headers)
        if door == "history":
            return client.get(f"{url}/api/channels/{slug}/messages", headers=headers)
        if door == "mint_token":
            return client.post(f"{url}/api/tokens", json={"channels": [slug]}, headers=headers)
        query = "?format=ndjson" if door == "ndjson" else ""
        with client.stream("GET", f"{url}/events/{slug}/{query}", headers=headers) as response:
            response.read() if response.status_code != 200 else None
            return response


@pytest.mark.parametrize("door", DOORS)
def test_a_wrong_key_beside_a_right_one_is_refused_on_every_door(
    server: ServerProcess, api_key: str, slug: str, door: str
) -> None:
    right = f"Bearer {api_key}"
    for pair in ([WRONG, right], [right, WRONG]):
        response = knock(server, door, slug, [("Authorization", value) for value in pair])
        assert response.status_code == 401, (pair, response.status_code)
        assert json.loads(response.content)["error"] == "unauthorized"


def test_a_repeated_idempotency_key_is_the_same_key_on_both_publish_paths(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    name = f"twice-{next(_names)}"
    headers = [
        ("Authorization", f"Bearer {api_key}"),
        ("Idempotency-Key", f"{name}-a"),
        ("Idempotency-Key", f"{name}-b"),
    ]
    first = knock(server, "publish_fast", slug, headers)
    again = knock(server, "publish_django", slug, headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    # Neither half alone is that key.
    alone = knock(server, "publish_django", slug, headers[:1] + headers[2:])
    assert alone.status_code == 201
    assert "Idempotent-Replayed" not in alone.headers
