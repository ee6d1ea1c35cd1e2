"""What answering a stream request eagerly saves: uvicorn's task and loop turn, per request.

``python -m bench.eager_start [--requests N] [--rounds R]``: Pushsite's protocol
(pushsite/protocol.py) with and without its eager start each take N
connections in turn, each with one ``GET /events/<slug>/`` that a trivial ASGI
application answers at once (no Django), on fake transports; the process's CPU
time per request is compared round by round (the order turning each round), so
other load on the machine hits both alike. It isolates the protocol's part of an
open; the whole open is the ``connections`` scenario (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import django
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")  # settings only: nothing here serves Django
django.setup()

from pushsite.protocol import PushsiteHttpProtocol  # noqa: E402

REQUEST = b"GET /events/news/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"


class Transport:
    """What the protocols use of a transport; writes are dropped."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def set_protocol(self, protocol: Any) -> None:
        pass

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """A stream's head and first frame, at once (what a directory-admitted open does)."""
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": False})


async def one_round(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    """CPU seconds per request for ``requests`` connections served by ``protocol_class``."""
    config = Config(app=answer, proxy_headers=False, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    started = time.process_time()
    for index in range(requests):
        protocol = protocol_class(config=config, server_state=state, app_state={})
        protocol.connection_made(Transport())  # type: ignore[arg-type]
        protocol.data_received(REQUEST)
        if index % 200 == 199:  # the loop turns between reads, with 200 connects in flight
            await asyncio.sleep(0)
            await asyncio.sleep(0)
    while state.tasks:
        await asyncio.sleep(0)
    return (time.process_time() - started) / requests


class TaskPerRequest(PushsiteHttpProtocol):
    """Pushsite's protocol without the eager start: every request in uvicorn's task."""

    data_received = HttpToolsProtocol.data_received
    _start_asgi_task = HttpToolsProtocol._start_asgi_task


async def main(requests: int, rounds: int) -> None:
    pairs = {"task": TaskPerRequest, "eager": PushsiteHttpProtocol}
    results: dict[str, list[float]] = {name: [] for name in pairs}
    for index in range(rounds):
        order = list(pairs) if index % 2 == 0 else list(reversed(pairs))
        for name in order:
            results[name].append(await one_round(pairs[name], requests))
    for name, values in results.items():
        print(
            f"{name}: {statistics.median(values) * 1e6:.1f} µs per request (rounds: "
            + ", ".join(f"{v * 1e6:.1f}" for v in values)
            + ")"
        )
    saved = [a - b for a, b in zip(results["task"], results["eager"], strict=True)]
    print(f"saved per request: median {statistics.median(saved) * 1e6:.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6)
    arguments = parser.parse_args()
    uvloop.run(main(arguments.requests, arguments.rounds))
