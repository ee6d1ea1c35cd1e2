"""ASGI lifespan: start the relay (and its periodic work) at boot; on shutdown, send what the
fan-out still holds (briefly) and leave the groups."""

from __future__ import annotations

import gc
import logging

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, LifespanScope

from events.deliver.relay import current_relay, get_relay
from events.publish import fanout

logger = logging.getLogger(__name__)

# Allocations between two young collections (CPython's default is 700). Every open
# stream keeps a few dozen objects; with the default, 5,000 opens made about 250
# young collections and two full ones, and each full one scanned Django's start-up
# heap (docs/performance.md, "Opens per second: the collector").
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_heap() -> None:
    """Take what start-up built (modules, settings, URL patterns) out of the collector's scans.

    A full collection then walks only what was made since: streams, not Django.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


async def lifespan(scope: LifespanScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """ASGI lifespan: start the relay; on shutdown drain the fan-out and leave the layer's groups."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # The scheduler must run even in a process nobody has subscribed to
            # yet. A layer that is down at boot is retried on first use.
            try:
                await get_relay().ready()
            except Exception:
                logger.warning("Channel layer unavailable at startup; will retry.", exc_info=True)
            settle_heap()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Publishes answered 201 before the signal: their frames go out now,
            # within a short bound (the relays of other processes read whatever
            # is left from the database).
            await fanout.drain()
            relay = current_relay()
            if relay is not None:
                await relay.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
