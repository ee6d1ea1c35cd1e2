"""Ending streams when the server stops, so that clients resume elsewhere at once.

ASGI has no "shutdown is starting" message: lifespan.shutdown only arrives
after the server has waited for open responses, and an SSE response stays open
for hours. So the relay also chains itself onto the process's SIGTERM and
SIGINT handlers (whatever server installed them: uvicorn, each of its workers,
or daphne) and ends every stream cleanly the moment the signal arrives; the
server then shuts down with nothing left to wait for.

First it stops taking new streams (``relay.draining``: a new stream gets 503),
then it ends the open ones. The order matters: a browser tab told to reconnect
comes straight back, often on the same keep-alive connection, and a stream
opened on the dying process would hold its shutdown for the whole graceful
timeout ("timeout graceful shutdown exceeded"); refused, the tab backs off and
reaches another process (or this one, restarted).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from events.deliver.relay import Relay

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def close_streams_on_signals(relay: Relay) -> None:
    """Make SIGTERM/SIGINT end ``relay``'s streams, then run the server's own handler."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # default or ignored: the process is not a server that shuts down gracefully

        def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            relay.loop.call_soon_threadsafe(_close_all, relay)
            previous(number, frame)

        signal.signal(signum, handler)


def _close_all(relay: Relay) -> None:
    relay.draining = True
    if relay.streams:
        count = len(relay.streams)
        logger.info("Shutting down: ending %d open %s.", count, "stream" if count == 1 else "streams")
    relay.close_all("server shutting down")
