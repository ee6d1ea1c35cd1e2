"""Driving Pushsite's ASGI consumers in-process (the Django test client does not reach them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from asgiref.testing import ApplicationCommunicator

from events.deliver.endpoint import EventStreamEndpoint
from events.publish.ingest import StreamPublishConsumer

NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
CLIENT = ("203.0.113.7", 40000)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_scope(method: str, path: str, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": CLIENT,
        "server": ("testserver", 80),
        **extra,
    }


async def answer_of(communicator: ApplicationCommunicator) -> Answer:
    """The response an application sends: its start and every body chunk, to the last."""
    start = await communicator.receive_output(timeout=10)
    assert start["type"] == "http.response.start", start
    body = b""
    while True:
        message = await communicator.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(timeout=10)
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return Answer(start["status"], headers, body)


async def stream_publish(
    slug: str,
    chunks: list[bytes],
    *,
    authorization: str | None,
    content_type: str = NDJSON,
    method: str = "POST",
    extra_headers: dict[str, str] | None = None,
) -> Answer:
    """``POST /api/channels/<slug>/stream`` through the real consumer, one ASGI message per chunk."""
    headers = {"content-type": content_type, **(extra_headers or {})}
    if authorization is not None:
        headers["authorization"] = authorization
    scope = http_scope(
        method,
        f"/api/channels/{slug}/stream",
        headers,
        url_route={"args": (), "kwargs": {"slug": slug}},
    )
    communicator = ApplicationCommunicator(StreamPublishConsumer.as_asgi(), scope)
    for number, chunk in enumerate(chunks or [b""], start=1):
        await communicator.send_input(
            {"type": "http.request", "body": chunk, "more_body": number < len(chunks)}
        )
    return await answer_of(communicator)


async def subscribe_refused(method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
    """``GET /events/news/`` through the real consumer, for a request it refuses (it answers and stops)."""
    scope = http_scope(
        method, "/events/news/", headers or {}, url_route={"args": (), "kwargs": {"slug": "news"}}
    )
    communicator = ApplicationCommunicator(EventStreamEndpoint(), scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    return await answer_of(communicator)


def django_answer(response: Any) -> Answer:
    """A Django test client's response as an :class:`Answer`."""
    return Answer(
        response.status_code, {name.lower(): value for name, value in response.items()}, response.content
    )
