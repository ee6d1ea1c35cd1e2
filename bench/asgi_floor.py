"""The cheapest ASGI SSE application: what uvicorn itself costs, without Django or Channels.

Served exactly as Pushsite is (uvicorn, uvloop, httptools), it separates the
ASGI server's share of each number from Pushsite's own. Same URLs as Pushsite;
a publish encodes its frame once and calls every stream's ASGI ``send`` eagerly
(events/deliver/eager.py, a pure module). No storage. Run with
``python -m bench.asgi_floor --port P``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

from events.deliver.eager import start_eagerly

_streams: set[Any] = set()
_sequence = 0


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _sequence
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if method == "GET" and path.startswith("/events/"):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b"retry: 2000\n\nid: %d\n\n" % _sequence,
                "more_body": True,
            }
        )
        _streams.add(send)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            _streams.discard(send)
        return
    if method == "POST" and path.startswith("/api/channels/"):
        payload = json.loads(await _body(receive))
        _sequence += 1
        envelope = {"id": _sequence, "event": payload.get("event", "message"), "data": payload["data"]}
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (
            _sequence,
            envelope["event"].encode(),
            json.dumps(envelope, separators=(",", ":")).encode(),
        )
        message = {"type": "http.response.body", "body": frame, "more_body": True}
        for stream_send in tuple(_streams):
            pending = start_eagerly(stream_send(message))
            if pending is not None:
                pending.add_done_callback(lambda future: future.cancelled() or future.exception())
        await _respond(send, 201, json.dumps(envelope).encode())
        return
    if path == "/healthz":
        await _respond(send, 200, b'{"status":"ok"}')
        return
    await _respond(send, 404, b'{"error":"not_found"}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    uvicorn.run(
        application,
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
