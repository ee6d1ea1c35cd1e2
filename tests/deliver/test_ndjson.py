"""The NDJSON subscription format: the pure rewrite, byte for byte, and real readers on a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from events.wire import ndjson
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, sequence_of, without_epochs

ENVELOPE = b'{"id":7,"channel":"news","event":"notice","data":"hi","published_at":"2026-01-01T00:00:00.000Z"}'


@pytest.mark.parametrize(
    ("frame", "line"),
    [
        # A message of a one-channel stream: the envelope plus the cursor.
        (
            b"id: 7\nevent: notice\ndata: " + ENVELOPE,
            ENVELOPE[:-1] + b',"cursor":"7"}\n',
        ),
        # A multi-channel cursor, exactly as the id line said.
        (
            b"id: news:7,scores:2\nevent: notice\ndata: " + ENVELOPE,
            ENVELOPE[:-1] + b',"cursor":"news:7,scores:2"}\n',
        ),
        # The resume point right after subscribing.
        (b"id: 0", b'{"cursor":"0"}\n'),
        # Heartbeat: an empty line.
        (b": keep-alive", b"\n"),
        # A live-only event has no id, so no cursor.
        (
            b'event: typing\ndata: {"channel":"news","event":"typing","data":1}',
            b'{"channel":"news","event":"typing","data":1}\n',
        ),
        # Separators that str.splitlines() would break on are escaped.
        (
            'id: 8\nevent: message\ndata: {"data":"a\u2028b\u2029c\x85d"}'.encode(),
            b'{"data":"a\\u2028b\\u2029c\\u0085d","cursor":"8"}\n',
        ),
        # Nothing to say (a retry hint alone would vanish).
        (b"retry: 2000", b""),
        # The opening block: the retry hint is dropped, the resume point kept.
        (
            b'retry: 2000\nid: 3\nevent: pushsite.open\ndata: {"event":"pushsite.open","channels":["news"]}',
            b'{"event":"pushsite.open","channels":["news"],"cursor":"3"}\n',
        ),
    ],
)
def test_frame_to_line(frame: bytes, line: bytes) -> None:
    assert ndjson.frame_to_line(frame) == line


def test_several_frames_in_one_write_become_several_lines() -> None:
    body = b"id: 0\n\n: keep-alive\n\nid: 7\nevent: notice\ndata: " + ENVELOPE + b"\n\n"
    assert ndjson.from_sse(body) == b'{"cursor":"0"}\n\n' + ENVELOPE[:-1] + b',"cursor":"7"}\n'


# --- a real server, read as a requests or httpx user would --------------------------


@pytest.fixture(scope="module")
def quiet(site: Site) -> str:
    """A channel these tests only read (no test publishes to it)."""
    site.create_channels("ndjson-quiet")
    return "ndjson-quiet"


def publish(server: ServerProcess, key: str, slug: str, data: object) -> int:
    response = httpx.post(
        f"{server.url}/api/channels/{slug}/messages",
        json={"data": data},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def json_lines(response: requests.Response) -> Iterator[dict[str, Any]]:
    """What a requests user writes: skip the empty heartbeat lines, parse the rest."""
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def events(lines: Iterator[dict[str, object]]) -> Iterator[dict[str, object]]:
    """The messages, without the pushsite.open line that carries the resume point."""
    return (line for line in lines if line.get("event") != "pushsite.open")


def test_ndjson_subscription_with_requests_and_resume_after_a_cursor(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    url = f"{server.url}/events/{channel}/"
    with requests.get(
        url, headers={"Accept": "application/x-ndjson"}, stream=True, timeout=(5, 10)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["cache-control"] == "no-cache"
        lines = json_lines(response)
        start = next(lines)
        assert start["event"] == "pushsite.open"  # the resume point
        assert sequence_of(start["cursor"]) >= 0
        sent = [publish(server, api_key, channel, {"n": n}) for n in range(3)]
        received = [next(lines) for _ in sent]
    assert [line["id"] for line in received] == sent
    assert [line["data"] for line in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [sequence_of(line["cursor"]) for line in received] == sent
    assert all(line["channel"] == channel and line["event"] == "message" for line in received)

    # Away for a while, then back with ?after=<cursor of the first line>.
    fourth = publish(server, api_key, channel, {"n": 3})
    with requests.get(
        url, params={"format": "ndjson", "after": received[0]["cursor"]}, stream=True, timeout=(5, 10)
    ) as response:
        lines = events(json_lines(response))
        resumed = [next(lines) for _ in range(3)]
    assert [line["id"] for line in resumed] == [*sent[1:], fourth]

    # The Last-Event-ID header works the same way.
    with requests.get(
        url,
        headers={"Accept": "application/x-ndjson", "Last-Event-ID": str(sent[2])},
        stream=True,
        timeout=(5, 10),
    ) as response:
        assert next(events(json_lines(response)))["id"] == fourth


def test_ndjson_heartbeats_are_empty_lines(server: ServerProcess, channel: str) -> None:
    # The test server's heartbeat is 1 s.
    with httpx.stream("GET", f"{server.url}/events/{channel}/?format=ndjson", timeout=10) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["event"] == "pushsite.open"
        assert next(lines) == ""


def test_ndjson_multi_channel_cursor_and_reset_line(server: ServerProcess, api_key: str, quiet: str) -> None:
    # short-history keeps 3 messages: resuming from long ago gives a reset line first.
    sent = [publish(server, api_key, "short-history", n) for n in range(5)]
    with httpx.stream(
        "GET",
        f"{server.url}/events/?channel=short-history&channel={quiet}&format=ndjson",
        headers={"Last-Event-ID": f"short-history:{sent[0]},{quiet}:0"},
        timeout=10,
    ) as response:
        lines = events(json.loads(line) for line in response.iter_lines() if line)
        reset = next(lines)
        assert reset["event"] == "pushsite.reset"
        assert without_epochs(str(reset["cursor"])) == f"short-history:{sent[1]},{quiet}:0"
        replayed = [next(lines) for _ in range(3)]
    assert [line["id"] for line in replayed] == sent[2:]
    assert without_epochs(str(replayed[-1]["cursor"])) == f"short-history:{sent[4]},{quiet}:0"


@pytest.mark.parametrize(
    ("query", "headers", "content_type"),
    [
        ("", {}, "text/event-stream"),
        ("", {"Accept": "text/event-stream"}, "text/event-stream"),
        ("", {"Accept": "application/x-ndjson, text/event-stream"}, "text/event-stream"),
        ("", {"Accept": "application/x-ndjson"}, "application/x-ndjson"),
        ("?format=ndjson", {"Accept": "text/event-stream"}, "application/x-ndjson"),
        ("?format=sse", {"Accept": "application/x-ndjson"}, "text/event-stream"),
    ],
)
def test_format_choice(
    server: ServerProcess, quiet: str, query: str, headers: dict[str, str], content_type: str
) -> None:
    with httpx.stream("GET", f"{server.url}/events/{quiet}/{query}", headers=headers, timeout=10) as response:
        assert response.headers["content-type"] == content_type
        assert "Accept" in response.headers["vary"]


def test_unknown_format_is_a_400(server: ServerProcess, quiet: str) -> None:
    response = httpx.get(f"{server.url}/events/{quiet}/?format=xml", timeout=10)
    assert response.status_code == 400
    assert "format must be one of sse, ndjson" in response.json()["detail"]


def test_a_bad_after_is_a_400_naming_after(server: ServerProcess, quiet: str) -> None:
    response = httpx.get(f"{server.url}/events/{quiet}/?format=ndjson&after=zz", timeout=10)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "after must be an event id this server sent: a number, or slug:number pairs joined by commas (not 'zz')."
    )


async def test_after_is_only_an_alias_for_ndjson(server: ServerProcess, api_key: str, channel: str) -> None:
    # On an SSE stream ?after= is no resume point (the contract names lastEventId):
    # the stream starts at the end, it does not replay.
    last = publish(server, api_key, channel, "before")
    async with Subscriber(f"{server.url}/events/{channel}/?after=0") as subscriber:
        opened = await subscriber.opened()
        assert sequence_of(opened.id) == last  # starts at the end: nothing replayed
        assert bytes(subscriber.raw).startswith(
            f"retry: 2000\nid: {opened.id}\nevent: pushsite.open\n".encode()
        )


def test_huge_accept_headers_are_answered_but_not_remembered() -> None:
    # Accept is parsed once per distinct value (a cache of 256): uvicorn's httptools
    # parser takes a header of any length, so 256 opens with 20 MB each held 5 GB.
    import gc
    import tracemalloc

    from events.deliver.consumer import NDJSON_FORMAT, _output_format

    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for number in range(8):
            huge = f"application/x-ndjson, x/{number}" + "x" * 1_000_000
            assert _output_format({}, {"accept": huge}) == NDJSON_FORMAT
            del huge
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held - before < 1_000_000
    assert _output_format({}, {"accept": "application/x-ndjson"}) == NDJSON_FORMAT
