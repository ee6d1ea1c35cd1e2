"""Cross-origin policy per channel: the stream, the history API, preflights, the iframe."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from events.provisioning import upsert_channel
from tests.support.servers import ServerProcess

PARTNER = "http://partner.example:8080"

ORIGIN_CASES = [
    ("allowed", PARTNER, True),
    ("not on the list", "http://other.example", False),
    ("null origin", "null", False),
    ("look-alike host", "http://partner.example.evil.test:8080", False),
    ("scheme differs", "https://partner.example:8080", False),
    ("port differs", "http://partner.example", False),
    ("trailing slash", PARTNER + "/", False),
]


@pytest.mark.parametrize(
    ("origin", "allowed"), [c[1:] for c in ORIGIN_CASES], ids=[c[0] for c in ORIGIN_CASES]
)
def test_stream_origin_policy(server: ServerProcess, origin: str, allowed: bool) -> None:
    with httpx.stream(
        "GET", f"{server.url}/events/partner-feed/", headers={"Origin": origin}, timeout=5
    ) as response:
        if allowed:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == origin
            assert "access-control-allow-credentials" not in response.headers
            assert "Origin" in response.headers["vary"]
        else:
            assert response.status_code == 403
            assert (
                response.headers["access-control-allow-origin"] == "*"
            )  # the error is readable, nothing else
            assert "does not allow pages from" in response.read().decode()


def test_same_origin_needs_no_list(server: ServerProcess, channel: str) -> None:
    with httpx.stream(
        "GET", f"{server.url}/events/{channel}/", headers={"Origin": server.url}, timeout=5
    ) as response:
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


def test_stream_preflight(server: ServerProcess) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "last-event-id"}
    allowed = httpx.options(f"{server.url}/events/partner-feed/", headers={"Origin": PARTNER, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == PARTNER
    assert "Last-Event-ID" in allowed.headers["access-control-allow-headers"]
    refused = httpx.options(
        f"{server.url}/events/partner-feed/", headers={"Origin": "http://evil.test", **preflight}
    )
    assert refused.status_code == 204
    assert "access-control-allow-origin" not in refused.headers


def test_stream_refuses_other_methods(server: ServerProcess, channel: str) -> None:
    response = httpx.post(f"{server.url}/events/{channel}/", content=b"x")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("origin", "allowed"), [c[1:] for c in ORIGIN_CASES], ids=[c[0] for c in ORIGIN_CASES]
)
def test_history_origin_policy(client: Client, origin: str, allowed: bool) -> None:
    upsert_channel("partner-feed", allowed_origins=[PARTNER])
    response = client.get("/api/channels/partner-feed/messages", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    assert response.get("Access-Control-Allow-Credentials") is None


@pytest.mark.django_db
def test_history_preflight_allows_reads_not_publishes(client: Client) -> None:
    upsert_channel("partner-feed", allowed_origins=[PARTNER])
    read = client.options(
        "/api/channels/partner-feed/messages",
        headers={"Origin": PARTNER, "Access-Control-Request-Method": "GET"},
    )
    assert read["Access-Control-Allow-Origin"] == PARTNER
    publish = client.options(
        "/api/channels/partner-feed/messages",
        headers={"Origin": PARTNER, "Access-Control-Request-Method": "POST"},
    )
    assert publish.get("Access-Control-Allow-Origin") is None


@pytest.mark.django_db
def test_embed_page_may_only_be_framed_by_allowed_origins(client: Client) -> None:
    upsert_channel("partner-feed", allowed_origins=[PARTNER, "https://docs.example"])
    upsert_channel("lonely")
    response = client.get("/embed/partner-feed/?theme=dark&title=<b>Scores</b>")
    assert response.status_code == 200
    assert response["Content-Security-Policy"].endswith(f"frame-ancestors {PARTNER} https://docs.example")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "X-Frame-Options" not in response
    assert 'data-theme="dark"' in response.content.decode()
    assert "&lt;b&gt;Scores&lt;/b&gt;" in response.content.decode()
    assert client.get("/embed/lonely/")["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    assert client.get("/embed/nope/").status_code == 404
    assert client.get("/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_admin_shows_the_embed_snippets(client: Client) -> None:
    channel = upsert_channel("partner-feed", title='Scores "live"', allowed_origins=[PARTNER])[0]
    client.force_login(User.objects.create_superuser("boss", "", "pw"))
    page = client.get(f"/admin/events/channel/{channel.pk}/change/").content.decode()
    assert "Embed this channel on another site" in page
    assert (
        "&lt;script src=&quot;http://testserver/static/events/widget.js&quot; "
        "data-channel=&quot;partner-feed&quot;" in page
    )
    assert "/embed/partner-feed/" in page
    assert "data-title=&quot;Scores &amp;quot;live&amp;quot;&quot;" in page  # escaped twice: code, shown
    assert '<script src="http://testserver/static/events/widget.js"' not in page  # never live in the admin
    assert f"<code>{PARTNER}</code>" in page


@pytest.mark.parametrize(
    ("origin", "allowed"), [c[1:] for c in ORIGIN_CASES], ids=[c[0] for c in ORIGIN_CASES]
)
def test_history_origin_policy_on_a_real_server(server: ServerProcess, origin: str, allowed: bool) -> None:
    """The served stack is async: the per-channel check must not touch the database on the loop (was a 500)."""
    response = httpx.get(f"{server.url}/api/channels/partner-feed/messages", headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert response.headers.get("access-control-allow-origin") == (origin if allowed else None)
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(("slug", "status"), [("partner-feed", 200), ("no-such-channel", 404)])
def test_history_preflight_and_unknown_channels_on_a_real_server(
    server: ServerProcess, slug: str, status: int
) -> None:
    preflight = httpx.options(
        f"{server.url}/api/channels/{slug}/messages",
        headers={"Origin": PARTNER, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert preflight.headers.get("access-control-allow-origin") == (PARTNER if status == 200 else None)
    publish = httpx.options(
        f"{server.url}/api/channels/{slug}/messages",
        headers={"Origin": PARTNER, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in publish.headers
    read = httpx.get(f"{server.url}/api/channels/{slug}/messages", headers={"Origin": PARTNER})
    assert read.status_code == status
    assert read.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["messages%0A", "messages%0A%0A", "messages/"])
def test_a_history_path_with_a_trailing_newline_is_no_history_for_cors(
    server: ServerProcess, path: str
) -> None:
    # HISTORY_PATH ended in "$", which matches before a trailing newline: a preflight for
    # /api/channels/partner-feed/messages%0A was approved and its 404 carried the partner's CORS header.
    url = f"{server.url}/api/channels/partner-feed/{path}"
    preflight = httpx.options(url, headers={"Origin": PARTNER, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers
    read = httpx.get(url, headers={"Origin": PARTNER})
    assert read.status_code == 404
    assert read.json()["error"] == "not_found"
    assert "access-control-allow-origin" not in read.headers
