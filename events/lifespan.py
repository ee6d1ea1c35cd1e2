"""ASGI lifespan: close streams on shutdown so clients reconnect at once."""

from __future__ import annotations

import logging
from typing import Any

from .relay import current_relay

logger = logging.getLogger(__name__)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            relay = current_relay()
            if relay is not None:
                logger.info("Shutting down: closing %s streams.", len(relay.streams))
                await relay.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
