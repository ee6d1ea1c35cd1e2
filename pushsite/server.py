"""Production serving: uvicorn with uvloop and httptools.

docs/performance.md has the measurements behind uvicorn (rather than daphne,
which stays for ``runserver``). Streams end cleanly on SIGTERM in every worker
(events/runtime/shutdown.py), so uvicorn's graceful shutdown has nothing to wait for.
"""

from __future__ import annotations

import gc
from typing import Any

import uvicorn

# uvicorn's httptools protocol plus direct writes for streams (pushsite/protocol.py).
DIRECT_PROTOCOL = "pushsite.protocol:PushsiteHttpProtocol"
# The same, without direct writes: streams write through plain ASGI send (serve --portable).
BOUNDED_PROTOCOL = "pushsite.protocol:BoundedHttpProtocol"


def serve(host: str, port: int, *, workers: int = 1, portable: bool = False, **overrides: Any) -> None:
    """Run until SIGTERM/SIGINT; with ``workers`` > 1, that many processes share the socket.

    ``portable``: httptools with only the head bounds of pushsite/protocol.py, so streams write through plain ASGI ``send``
    (what every other server gets; the test suite runs the stream tests both ways).
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": BOUNDED_PROTOCOL if portable else DIRECT_PROTOCOL,
        "lifespan": "on",
        # Access lines would contain query strings (subscribe tokens); the
        # application logs each stream and publish itself.
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": True,
        "log_level": "info",
    }
    options.update(overrides)
    uvicorn.run("pushsite.asgi:application", **options)
    # Served and stopped: the interpreter's exit would now walk the whole heap in full
    # collections (measured: about 2 s of a ``--workers 2`` supervisor's stop on a busy
    # machine, past the 2 s the README promises). Frozen, the objects are not walked;
    # the process's memory goes back to the system when it ends either way.
    gc.freeze()
