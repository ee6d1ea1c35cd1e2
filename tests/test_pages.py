"""What visitors see first: channel pages, the embed's options, the demo ticker's payload."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client

from events.demo.management.commands.demo_ticker import score_update
from events.models import Kind
from events.provisioning import upsert_channel
from events.publish.store import publish
from events.views import CHANNEL_PAGE_REWIND
from tests.support.servers import ROOT, ServerProcess


def test_the_demo_ticker_publishes_a_readable_text_and_the_numbers() -> None:
    assert score_update(3, 1) == {"text": "Reds 3 - 1 Blues", "match": "Reds v Blues", "home": 3, "away": 1}


@pytest.mark.django_db
def test_a_channel_page_rewinds_and_says_when_the_channel_is_empty(client: Client) -> None:
    upsert_channel("quiet", title="Quiet")
    page = client.get("/channels/quiet/").content.decode()
    assert "No messages yet: new ones appear here as they are published." in page
    assert f'data-channel="quiet" data-rewind="{CHANNEL_PAGE_REWIND}"' in page
    publish("quiet", {"text": "hello"})
    assert "No messages yet" not in client.get("/channels/quiet/").content.decode()


@pytest.mark.django_db
def test_a_chat_room_has_no_channel_page_but_its_room(client: Client) -> None:
    upsert_channel("lounge", kind=Kind.CHAT)
    response = client.get("/channels/lounge/")
    assert response.status_code == 302
    assert response["Location"] == "/rooms/lounge/"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "attribute"), [("?rewind=3", 'data-rewind="3"'), ("?rewind=0", 'data-rewind="0"')]
)
def test_the_embed_passes_its_rewind_to_the_widget(client: Client, query: str, attribute: str) -> None:
    upsert_channel("partner-feed")
    assert attribute in client.get(f"/embed/partner-feed/{query}").content.decode()
    assert "data-rewind" not in client.get("/embed/partner-feed/?rewind=lots").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        (
            "post",
            "/api/channels/news/messages/",
            "There is no API endpoint at /api/channels/news/messages/; "
            "leave out the trailing slash: /api/channels/news/messages",
        ),
        (
            "get",
            "/api/channels/news/messages/",
            "There is no API endpoint at /api/channels/news/messages/; "
            "leave out the trailing slash: /api/channels/news/messages",
        ),
        (
            "post",
            "/api/channels/news/stream/",
            "There is no API endpoint at /api/channels/news/stream/; "
            "leave out the trailing slash: /api/channels/news/stream",
        ),
        (
            "post",
            "/api/tokens/",
            "There is no API endpoint at /api/tokens/; leave out the trailing slash: /api/tokens",
        ),
        (
            "get",
            "/api/nothing",
            "There is no API endpoint at /api/nothing. The endpoints are listed in the README.",
        ),
        ("get", "/api/", "There is no API endpoint at /api/. The endpoints are listed in the README."),
        (
            "delete",
            "/api/nothing/",
            "There is no API endpoint at /api/nothing/. The endpoints are listed in the README.",
        ),
    ],
)
def test_unknown_api_paths_answer_json_404(settings: object, method: str, path: str, detail: str) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]  # even where Django would show its debug page
    client = Client(enforce_csrf_checks=True)
    if method == "get":
        response = client.get(path)
    else:
        response = getattr(client, method)(path, data=b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": detail}


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/events/news", "There is no stream at /events/news; add the trailing slash: /events/news/"),
        (
            "/events/news?format=ndjson&after=0",
            "There is no stream at /events/news; add the trailing slash: /events/news/?format=ndjson&after=0",
        ),
        ("/events", "There is no stream at /events; add the trailing slash: /events/"),
        (
            "/events/news/extra/",
            "There is no stream at /events/news/extra/. "
            "Streams are /events/<slug>/ and /events/?channel=<slug>&channel=<slug>.",
        ),
    ],
)
def test_stream_urls_missing_a_slash_answer_json_404_naming_the_stream(
    settings: object, path: str, detail: str
) -> None:
    settings.DEBUG = True  # type: ignore[attr-defined]  # even where Django would show its debug page
    response = Client().get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": detail}


async def test_a_stream_url_without_its_slash_is_a_json_404_on_the_served_stack(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{server.url}/events/news")
    assert response.status_code == 404
    assert (
        response.json()["detail"]
        == "There is no stream at /events/news; add the trailing slash: /events/news/"
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [("put", "/api/channels/news/messages"), ("get", "/api/tokens")])
def test_wrong_methods_on_api_paths_answer_json_405(method: str, path: str) -> None:
    upsert_channel("news")
    response = getattr(Client(), method)(path)
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/no-such-page/", "/channels/no-such-channel/", "/rooms/no-such-room/"])
def test_pages_have_a_styled_404(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    page = response.content.decode()
    assert "<h1>Nothing here</h1>" in page
    assert f"There is no page at <code>{path}</code>" in page
    assert 'href="/static/events/site' in page  # the site's own look
    assert 'href="/">See the channels and chat rooms</a>' in page


@pytest.mark.django_db
def test_home_lists_feeds_and_chat_rooms_apart(client: Client) -> None:
    upsert_channel("scores", title="Live scores")
    upsert_channel("lobby", title="Lobby", kind=Kind.CHAT)
    upsert_channel("secret", visibility="private")
    page = client.get("/").content.decode()
    feeds = page[page.index('id="feed-list"') : page.index('id="rooms"')]
    rooms = page[page.index('id="room-list"') :]
    assert 'href="/channels/scores/">Live scores</a>' in feeds
    assert "lobby" not in feeds
    assert 'href="/rooms/lobby/">Lobby</a>' in rooms
    assert "scores" not in rooms
    assert "secret" not in page


@pytest.mark.django_db
def test_operators_find_the_live_operations_page(client: Client) -> None:
    from django.contrib.auth.models import User

    assert "/admin/events/channel/operations/" not in client.get("/").content.decode()
    client.force_login(User.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True))
    assert 'href="/admin/events/channel/operations/">Operations</a>' in client.get("/").content.decode()
    index = client.get("/admin/").content.decode()
    assert "Pushsite administration" in index
    assert "Django administration" not in index
    assert 'href="/admin/events/channel/operations/">Live operations</a>' in index
    assert client.get("/admin/events/channel/operations/").status_code == 200


def test_static_files_are_served_whole_in_ranges_and_without_a_sync_iterator(server: ServerProcess) -> None:
    # AsyncWhiteNoiseMiddleware hands Django an async iterator: a sync one is read whole
    # into memory by Django's ASGI handler, with a warning in every server's log.
    url = f"{server.url}/static/events/widget.js"
    expected = (ROOT / "events" / "static" / "events" / "widget.js").read_bytes()
    plain = {"Accept-Encoding": "identity"}
    whole = httpx.get(url, headers=plain)
    assert whole.status_code == 200
    assert whole.content == expected
    ranged = httpx.get(url, headers={**plain, "Range": "bytes=0-9"})
    assert ranged.status_code == 206
    assert ranged.content == expected[:10]
    head = httpx.head(url, headers=plain)
    assert head.status_code == 200
    assert head.content == b""
    unchanged = httpx.get(url, headers={**plain, "If-None-Match": whole.headers["etag"]})
    assert unchanged.status_code == 304
    assert "must consume synchronous iterators" not in server.log()


def test_a_request_for_another_host_is_one_log_line_not_a_traceback(server: ServerProcess) -> None:
    before = len(server.log())
    response = httpx.get(f"{server.url}/", headers={"Host": "evil.example"})
    assert response.status_code == 400
    logged = server.log()[before:]
    assert "Invalid HTTP_HOST header: 'evil.example'" in logged
    assert "Traceback" not in logged


def test_pages_name_their_icon_and_it_is_served(server: ServerProcess) -> None:
    # Without one every page's first load logged a 404 for /favicon.ico.
    page = httpx.get(f"{server.url}/").text
    assert '<link rel="icon" href="/static/events/favicon' in page
    icon = page.split('<link rel="icon" href="', 1)[1].split('"', 1)[0]
    served = httpx.get(f"{server.url}{icon}")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/svg+xml")
