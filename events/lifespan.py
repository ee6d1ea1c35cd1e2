"""ASGI lifespan: on shutdown, leave the channel layer's groups."""

from __future__ import annotations

from typing import Any

from .relay import current_relay


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI lifespan: nothing to start; on shutdown leave the channel layer's groups."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            relay = current_relay()
            if relay is not None:
                await relay.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
