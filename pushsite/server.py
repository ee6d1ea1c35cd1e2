"""Production serving: uvicorn (uvloop + httptools) with a graceful stream shutdown.

uvicorn waits for open responses before it shuts down, and an SSE response is
open for hours; so on SIGTERM this server first ends every stream cleanly
(clients reconnect, to another process, with Last-Event-ID) and then lets
uvicorn finish. docs/performance.md says why uvicorn and not daphne.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from events.relay import current_relay

logger = logging.getLogger(__name__)


class PushsiteServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        relay = current_relay()
        if relay is not None:
            logger.info("SIGTERM: ending %s open streams.", len(relay.streams))
            relay.close_all("server shutting down")
        await super().shutdown(sockets)


def build_config(host: str, port: int, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        # Access lines would contain query strings (subscribe tokens); the
        # application logs each stream and publish itself.
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": True,
        "log_level": "info",
    }
    options.update(overrides)
    return uvicorn.Config("pushsite.asgi:application", **options)


def serve(host: str, port: int, *, workers: int = 1, **overrides: Any) -> None:
    """Run until SIGTERM/SIGINT; with ``workers`` > 1, that many processes share the socket."""
    config = build_config(host, port, workers=workers, **overrides)
    server = PushsiteServer(config)
    if workers > 1:
        # What uvicorn.run does for --workers, with our Server class in each worker.
        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
    else:
        server.run()
