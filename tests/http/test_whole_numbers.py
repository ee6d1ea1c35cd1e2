"""Whole numbers from clients: ASCII digits only, bounded, on every path that reads one.

``str.isdigit()`` takes "²" and "٣", which ``int()`` refuses or reads as a number
nobody typed: each path here once used it.
"""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import Client

from events.deliver.endpoint import EventStreamEndpoint
from events.http.numbers import whole_number
from events.models import Channel
from pushsite.asgi import application
from tests.support.asgi import answer_of, http_scope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]

NOT_ASCII_DIGITS = ["²", "٣", "1²", "\uff11\uff12", "+1", "-1", " 1", "1 ", "1e3", "0x10", "1_000", ""]


@pytest.mark.parametrize("raw", NOT_ASCII_DIGITS)
def test_only_ascii_digits_are_a_whole_number(raw: str) -> None:
    assert whole_number(raw, max_digits=9) is None


def test_a_whole_number_is_bounded_by_its_digits() -> None:
    assert whole_number("007", max_digits=3) == 7
    assert whole_number("1000", max_digits=3) is None
    assert whole_number("9" * 5000, max_digits=19) is None


@pytest.mark.parametrize("raw", ["²", "٣", "\uff11\uff12"])
def test_history_limit_refuses_them_with_a_json_400(news: Channel, raw: str) -> None:
    response = Client().get(f"/api/channels/news/messages?limit={raw}")
    assert response.status_code == 400
    assert "limit must be a whole number" in response.json()["detail"]


@pytest.mark.parametrize("raw", ["²", "٣"])
async def test_stream_rewind_refuses_them_with_a_json_400(news: Channel, raw: str) -> None:
    scope = http_scope(
        "GET",
        "/events/news/",
        {},
        query_string=f"rewind={raw}".encode(),
        url_route={"args": (), "kwargs": {"slug": "news"}},
    )
    communicator = ApplicationCommunicator(EventStreamEndpoint(), scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    answer = await answer_of(communicator)
    assert answer.status == 400
    assert "rewind must be a whole number" in json.loads(answer.body)["detail"]


def test_embed_page_passes_on_only_short_whole_numbers(news: Channel) -> None:
    page = Client().get("/embed/news/?max=²&rewind=٣").content.decode()
    assert 'data-max-items="10"' in page
    assert "data-rewind" not in page
    page = Client().get("/embed/news/?max=25&rewind=5").content.decode()
    assert 'data-max-items="25"' in page
    assert 'data-rewind="5"' in page
    page = Client().get(f"/embed/news/?max={'9' * 50}").content.decode()
    assert 'data-max-items="10"' in page


@pytest.mark.parametrize("declared", [["²"], ["١٢"], ["11", "11"], ["11, 11"], ["9" * 30]])
@pytest.mark.parametrize("path", ["/api/channels/news/messages", "/rooms/room/messages", "/api/tokens"])
async def test_a_content_length_that_is_not_one_whole_number_is_a_json_400(
    news: Channel, room: Channel, key: str, declared: list[str], path: str
) -> None:
    # Through the whole application: Django's request.body calls int() on it (a 500).
    headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {key}".encode())]
    headers += [(b"content-type", b"application/json")]
    headers += [(b"content-length", value.encode()) for value in declared]
    scope = {**http_scope("POST", path, {}), "headers": headers}
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b'{"data": 1}', "more_body": False})
    answer = await answer_of(communicator)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert "Content-Length must be one whole number" in json.loads(answer.body)["detail"]
