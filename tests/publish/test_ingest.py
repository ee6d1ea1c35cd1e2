"""Streaming publish (POST /api/channels/<slug>/stream) against a real server process."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from events.publish.body_lines import IDLE_BURST_BYTES
from events.wire.sse import ServerSentEvent
from tests.conftest import SERVER_SETTINGS
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, sequence_of

KEEP_CHANNELS = 14
FOLD_CHANNELS = 4
NDJSON = "application/x-ndjson"
END = "pushsite.stream.end"

_keep = itertools.count()
_fold = itertools.count()


@pytest.fixture(scope="module")
def stream_channels(site: Site) -> None:
    lines = [f"upsert_channel('sp-keep-{n}')" for n in range(KEEP_CHANNELS)]
    lines += [f"upsert_channel('sp-fold-{n}', stream_storage='fold')" for n in range(FOLD_CHANNELS)]
    site.shell("from events.provisioning import upsert_channel\n" + "\n".join(lines))


@pytest.fixture
def slug(stream_channels: None) -> str:
    """A keep channel of this test's own."""
    number = next(_keep)
    assert number < KEEP_CHANNELS, "raise KEEP_CHANNELS"
    return f"sp-keep-{number}"


@pytest.fixture
def fold_slug(stream_channels: None) -> str:
    number = next(_fold)
    assert number < FOLD_CHANNELS, "raise FOLD_CHANNELS"
    return f"sp-fold-{number}"


def ndjson_line(data: Any, event: str | None = None) -> bytes:
    message: dict[str, Any] = {"data": data}
    if event is not None:
        message["event"] = event
    return (json.dumps(message) + "\n").encode()


def envelope(event: ServerSentEvent) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(event.data)
    return value


def history(server: ServerProcess, slug: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/api/channels/{slug}/messages?limit=1000", timeout=10)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


class RawRequest:
    """A chunked POST on a bare socket: the test decides when each line goes, and when to hang up."""

    def __init__(self, server: ServerProcess, slug: str, key: str) -> None:
        self.server = server
        self.slug = slug
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> RawRequest:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self.writer.write(
            (
                f"POST /api/channels/{self.slug}/stream HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.server.port}\r\n"
                f"Authorization: Bearer {self.key}\r\n"
                f"Content-Type: {NDJSON}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        await self.writer.drain()
        return self

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, Any]]:
        assert self.reader is not None
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await self.reader.readexactly(length)
        return status, json.loads(body)

    async def hang_up(self) -> None:
        assert self.writer is not None
        self.writer.transport.abort()


async def subscribed(server: ServerProcess, slug: str) -> Subscriber:
    subscriber = Subscriber(f"{server.url}/events/{slug}/")
    await subscriber.__aenter__()
    assert subscriber.status == 200
    await subscriber.wait_for_bytes(b"id: ")  # subscribed: live from here on
    return subscriber


# --- the tests ----------------------------------------------------------------


async def test_parts_arrive_while_the_publisher_is_still_writing(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    lines_written = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal lines_written
        for n in range(200):
            yield ndjson_line({"n": n}, event="token")
            lines_written += 1
            await asyncio.sleep(0.01)

    async def publish() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{server.url}/api/channels/{slug}/stream",
                content=body(),
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": NDJSON},
            )
        return response, time.monotonic()

    subscriber = await subscribed(server, slug)
    try:
        started = time.monotonic()
        publisher = asyncio.create_task(publish())
        first = await subscriber.next_event(timeout=10)
        first_arrived = time.monotonic()
        written_when_first_arrived = lines_written
        rest = await subscriber.events(200, timeout=60)
        response, finished = await publisher
    finally:
        await subscriber.close()

    # Part 1 came long before the publisher was done (the body took at least 2 s).
    assert first_arrived - started < (finished - started) / 2
    assert written_when_first_arrived < 100
    parts = [first, *rest[:-1]]
    assert [e.event for e in parts] == ["token"] * 200
    payloads = [envelope(e)["data"] for e in parts]
    stream = payloads[0]["stream"]
    assert payloads == [{"stream": stream, "part": n + 1, "data": {"n": n}} for n in range(200)]
    end = rest[-1]
    assert end.event == END
    assert envelope(end)["data"] == {"stream": stream, "parts": 200, "status": "done", "reason": None}
    assert response.status_code == 201
    assert response.json() == {
        "stream": stream,
        "channel": slug,
        "parts": 200,
        "status": "done",
        "end_id": envelope(end)["id"],
    }
    # Parts are ordinary stored messages with consecutive ids: normal resume works.
    assert [sequence_of(e.id) for e in [*parts, end]] == [envelope(parts[0])["id"] + n for n in range(201)]


async def test_publisher_disconnect_mid_stream_ends_the_stream_as_failed(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    subscriber = await subscribed(server, slug)
    try:
        request = await RawRequest(server, slug, api_key).open()
        await request.send(ndjson_line("one") + ndjson_line("two"))
        parts = await subscriber.events(2)
        await request.hang_up()
        end = await subscriber.next_event()
    finally:
        await subscriber.close()
    assert [envelope(e)["data"]["data"] for e in parts] == ["one", "two"]
    assert end.event == END
    assert envelope(end)["data"] == {
        "stream": envelope(parts[0])["data"]["stream"],
        "parts": 2,
        "status": "failed",
        "reason": "The publisher disconnected mid-stream.",
    }


async def test_invalid_line_stops_the_stream_with_a_clear_error(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    body = ndjson_line(1) + ndjson_line(2) + ndjson_line(3) + b'{"data": 4,\n' + ndjson_line(5)
    subscriber = await subscribed(server, slug)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{server.url}/api/channels/{slug}/stream",
                content=body,
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": NDJSON},
            )
        events = await subscriber.events(4)
    finally:
        await subscriber.close()

    assert response.status_code == 400
    problem = response.json()
    assert problem["error"] == "invalid"
    assert problem["detail"].startswith("Line 4 is not valid JSON: ")
    assert problem["parts"] == 3
    assert problem["status"] == "failed"
    assert [envelope(e)["data"]["data"] for e in events[:3]] == [1, 2, 3]
    assert events[3].event == END
    assert envelope(events[3])["data"]["status"] == "failed"
    assert envelope(events[3])["data"]["reason"] == problem["detail"]
    # Nothing after the bad line: the channel holds the three parts and the end.
    stored = history(server, slug)
    assert [m["event"] for m in stored] == ["message"] * 3 + [END]


async def test_a_stream_may_not_forge_chat_events(server: ServerProcess, api_key: str, slug: str) -> None:
    before = len(history(server, slug))
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.url}/api/channels/{slug}/stream",
            content=ndjson_line(
                {"text": "hi", "author": {"name": "alice", "guest": False}}, event="chat.message"
            ),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": NDJSON},
        )
    assert response.status_code == 400
    problem = response.json()
    assert problem["detail"].startswith(
        "Line 1: event 'chat.message' is reserved: types starting with 'chat.' "
    )
    assert problem["parts"] == 0
    assert [m["event"] for m in history(server, slug)[before:]] == [END]  # the failed end, no part


# --- limits and refusals ----------------------------------------------------------------------


async def test_idle_publisher_gets_408_and_subscribers_a_failed_end(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    # The test server's STREAM_IDLE_SECONDS is 2.
    request = await RawRequest(server, slug, api_key).open()
    await request.send(ndjson_line("only"))
    status, body = await request.response()
    await request.hang_up()
    assert status == 408
    assert body["error"] == "timeout"
    assert body["detail"] == "No data arrived for 2 s; the stream is closed."
    assert body["parts"] == 1
    stored = history(server, slug)
    assert [m["event"] for m in stored] == ["message", END]
    assert stored[-1]["data"]["status"] == "failed"


async def test_line_over_the_size_limit_is_413(server: ServerProcess, api_key: str, slug: str) -> None:
    too_long = ndjson_line("x" * (64 * 1024))
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.url}/api/channels/{slug}/stream",
            content=ndjson_line("fine") + too_long,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": NDJSON},
        )
    assert response.status_code == 413
    assert response.json()["detail"] == "Line 2 is longer than the limit of 65536 bytes."
    assert [m["event"] for m in history(server, slug)] == ["message", END]


@pytest.mark.parametrize(
    ("method", "headers", "status", "code", "fragment"),
    [
        ("POST", {"Content-Type": NDJSON}, 401, "unauthorized", "needs 'Authorization: Bearer <api key>'"),
        ("POST", {"Content-Type": NDJSON, "Cookie": "sessionid=abc"}, 401, "unauthorized", "staff session"),
        (
            "POST",
            {"Content-Type": NDJSON, "Authorization": "Bearer psk_0_x"},
            401,
            "unauthorized",
            "not valid",
        ),
        ("POST", {"Content-Type": "application/json", "key": ""}, 415, "unsupported_media_type", "x-ndjson"),
        ("GET", {"key": ""}, 405, "method_not_allowed", "use POST"),
    ],
)
async def test_refusals_answer_json_and_publish_nothing(
    server: ServerProcess,
    api_key: str,
    slug: str,
    method: str,
    headers: dict[str, str],
    status: int,
    code: str,
    fragment: str,
) -> None:
    if headers.pop("key", None) is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(
            method, f"{server.url}/api/channels/{slug}/stream", content=ndjson_line(1), headers=headers
        )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert fragment in response.json()["detail"]
    assert history(server, slug) == []


async def test_unknown_channel_is_404(server: ServerProcess, api_key: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.url}/api/channels/no-such-channel/stream",
            content=ndjson_line(1),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": NDJSON},
        )
    assert response.status_code == 404
    assert response.json()["error"] == "channel_not_found"


@pytest.mark.parametrize("change", ["revoked", "narrowed"])
async def test_a_key_revoked_mid_stream_publishes_no_more_parts(
    server: ServerProcess, site: Site, slug: str, change: str
) -> None:
    # "Refused at once" (docs/security.md) holds for a stream that is already open:
    # every part is checked against the key, as every single publish is.
    name = f"mid-stream-{change}-{slug}"
    secret = await asyncio.to_thread(site.create_api_key, name, slug)
    revoke = (
        "ApiKey.objects.filter(name={name!r}).update(is_active=False)"
        if change == "revoked"
        else "ApiKey.objects.get(name={name!r}).channels.clear()"
    ).format(name=name)
    subscriber = await subscribed(server, slug)
    try:
        request = await RawRequest(server, slug, secret).open()
        await request.send(ndjson_line("before"))
        await subscriber.events(1)  # stored and sent
        revoking = asyncio.ensure_future(
            asyncio.to_thread(site.shell, "from events.models import ApiKey\n" + revoke)
        )
        while not revoking.done():  # blank lines: the server's idle limit is 2 s
            await request.send(b"\n")
            await asyncio.wait([revoking], timeout=0.5)
        await revoking
        await request.send(ndjson_line("after"))
        status, body = await request.response()
        await request.hang_up()
    finally:
        await subscriber.close()
    assert (status, body["error"]) == ((401, "unauthorized") if change == "revoked" else (403, "forbidden"))
    assert body["parts"] == 1
    stored = history(server, slug)
    assert [m["data"].get("data") for m in stored[:-1]] == ["before"]
    assert stored[-1]["event"] == END
    assert stored[-1]["data"]["status"] == "failed"


async def test_a_key_revoked_mid_stream_on_a_fold_channel_stores_no_done_stream(
    server: ServerProcess, site: Site, fold_slug: str
) -> None:
    # A fold channel's parts are live-only; the stream is stored whole in its end event.
    # A key revoked meanwhile may not have that stored as done, nor send more parts.
    name = f"mid-stream-fold-{fold_slug}"
    secret = await asyncio.to_thread(site.create_api_key, name, fold_slug)
    request = await RawRequest(server, fold_slug, secret).open()
    await request.send(ndjson_line("before"))
    revoking = asyncio.ensure_future(
        asyncio.to_thread(
            site.shell,
            f"from events.models import ApiKey\nApiKey.objects.filter(name={name!r}).update(is_active=False)",
        )
    )
    while not revoking.done():  # blank lines: the server's idle limit is 2 s
        await request.send(b"\n")
        await asyncio.wait([revoking], timeout=0.5)
    await revoking
    # A fold channel's parts store nothing, so the key is checked again once
    # PUSHSITE_REVOCATION_SECONDS have passed since its last check (docs/security.md):
    # a part sent sooner may still pass. Wait that bound out, then the next part is refused.
    bound_ends = time.monotonic() + float(SERVER_SETTINGS["REVOCATION_SECONDS"]) + 0.2
    while time.monotonic() < bound_ends:
        await request.send(b"\n")
        await asyncio.sleep(0.25)
    await request.send(ndjson_line("after"))
    await request.send(b"")  # the body's end
    status, body = await request.response()
    await request.hang_up()
    assert (status, body["error"]) == (401, "unauthorized")
    stored = history(server, fold_slug)
    assert stored[-1]["event"] == END
    assert stored[-1]["data"]["status"] == "failed"
    assert "folded" not in stored[-1]["data"] or stored[-1]["data"]["folded"] == [
        {"event": "message", "data": "before"}
    ]


# --- an SSE body into a fold channel --------------------------------------------------------


async def test_fold_channel_sends_parts_live_only_and_stores_one_message(
    server: ServerProcess, api_key: str, fold_slug: str
) -> None:
    before = history(server, fold_slug)
    resume_from = before[-1]["id"] if before else 0
    body = b'event: token\ndata: Hel\n\nevent: token\ndata: lo\n\ndata: {"done": true}\n\n'
    subscriber = await subscribed(server, fold_slug)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{server.url}/api/channels/{fold_slug}/stream",
                content=body,
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "text/event-stream"},
            )
        events = await subscriber.events(4)
        raw = bytes(subscriber.raw)
    finally:
        await subscriber.close()
    assert response.status_code == 201
    stream = response.json()["stream"]

    parts, end = events[:3], events[3]
    assert [e.event for e in parts] == ["token", "token", "message"]
    assert [envelope(e)["data"] for e in parts] == [
        {"stream": stream, "part": 1, "data": "Hel"},
        {"stream": stream, "part": 2, "data": "lo"},
        {"stream": stream, "part": 3, "data": {"done": True}},
    ]
    # Live-only: no id line, no id in the envelope, Last-Event-ID untouched.
    assert all("id" not in envelope(e) for e in parts)
    assert raw.count(b"\nid: ") + raw.startswith(b"id: ") == 2  # the resume point and the end
    assert end.event == END
    assert envelope(end)["data"] == {
        "stream": stream,
        "parts": 3,
        "status": "done",
        "reason": None,
        "folded": [
            {"event": "token", "data": "Hel"},
            {"event": "token", "data": "lo"},
            {"event": "message", "data": {"done": True}},
        ],
    }

    # History holds only the folded end; a late joiner replays just that.
    stored = history(server, fold_slug)
    assert [m["event"] for m in stored[len(before) :]] == [END]
    async with Subscriber(
        f"{server.url}/events/{fold_slug}/", headers={"Last-Event-ID": str(resume_from)}
    ) as late:
        replayed = await late.next_event()
    assert replayed.event == END
    assert envelope(replayed)["data"]["folded"][0] == {"event": "token", "data": "Hel"}


# Quiet rounds and flooded rounds in turns, so a change in the machine's own load
# weighs on both alike.
ROUNDS = 6
PER_ROUND = 15
FLOOD_CHUNK = b"\n" * 256 * 1024


async def latencies(client: httpx.AsyncClient, url: str, count: int) -> list[float]:
    """Seconds per GET of ``url``, ``count`` of them one after another."""
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(url)
        taken.append(time.perf_counter() - started)
        assert response.status_code == 200
    return taken


def quantile(values: list[float], fraction: float) -> float:
    return sorted(values)[min(len(values) - 1, int(fraction * len(values)))]


async def flooded_latencies(
    client: httpx.AsyncClient, url: str, request: RawRequest, count: int
) -> list[float]:
    """``count`` GETs of ``url`` while ``request`` sends line breaks, past the pace's burst."""
    past_burst, stop = asyncio.Event(), asyncio.Event()

    async def flood() -> None:
        sent = 0
        while not stop.is_set():
            await request.send(FLOOD_CHUNK)
            sent += len(FLOOD_CHUNK)
            if sent > 2 * IDLE_BURST_BYTES:
                past_burst.set()

    flooding = asyncio.create_task(flood())
    try:
        async with asyncio.timeout(10):
            await past_burst.wait()
        return await latencies(client, url, count)
    finally:
        stop.set()
        await flooding


async def test_a_body_of_line_breaks_does_not_hold_up_other_requests(
    server: ServerProcess, api_key: str, slug: str
) -> None:
    # Issue 13: a body of nothing but line breaks, however long, delays other requests
    # on the same process by a few milliseconds at most. Parsing it costs next to
    # nothing, and it is read no faster than IDLE_BYTES_PER_SECOND: the reading itself
    # is the server's work on the same event loop. Compared with the same request on
    # the same server, in the same run.
    url = f"{server.url}/api/channels/{slug}/messages?limit=1"
    quiet: list[float] = []
    flooded: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        await latencies(client, url, 5)  # connections and caches warm
        for _ in range(ROUNDS):
            quiet += await latencies(client, url, PER_ROUND)
            request = await RawRequest(server, slug, api_key).open()
            flooded += await flooded_latencies(client, url, request, PER_ROUND)
            await request.send(ndjson_line("after the flood"))
            await request.send(b"")  # the last chunk: the server reads what is still buffered
            status, body = await request.response()
            assert (status, body["parts"], body["status"]) == (201, 1, "done")
    # Measured on 2 cores shared by this client, the server and other work (load 5-9):
    # the median 0-6 ms above the quiet rounds' and the 90th percentile within their
    # noise (up to 30 ms either way); unpaced, the same flood added 11-50 ms to the
    # median and up to 120 ms to the 90th percentile.
    added = statistics.median(flooded) - statistics.median(quiet)
    tail = quantile(flooded, 0.9) - quantile(quiet, 0.9)
    assert added < 0.010, (sorted(quiet), sorted(flooded))
    assert tail < 0.050, (sorted(quiet), sorted(flooded))
