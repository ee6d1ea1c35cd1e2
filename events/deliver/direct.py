"""Direct writes: a stream owns its connection, below ASGI.

A server that offers the ``pushsite.transport`` extension in the request's
scope (Pushsite's own uvicorn protocol, pushsite/protocol.py, under
``manage.py serve``) lets a stream start its response there (``start``: the
server writes the head with the first frame) or claim its connection once the
head has gone out through ASGI ``send`` (``claim``). Either detaches the response
from ASGI: the server is done with it, the request's ASGI task ends, and the stream
holds the connection to its end. It writes frames without a coroutine, a
``send`` call or a message dict per frame, reads the transport's write buffer
for flow control and eviction, hears of the client leaving through
``on_lost`` (not ``http.disconnect``), ends the response itself (``finish``:
the chunked terminator, then the connection closes), and aborts the socket of a
reader it evicts instead of waiting for the kernel to drain it (issue 15). An
idle stream so costs its transport, the writer and the ``Stream``
(docs/performance.md, issue 16).

Every other server (daphne, ``runserver``) offers nothing, and the stream uses
plain ASGI ``send`` (events/deliver/stream.py) with its request's task alive:
the portable path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

# The scope extension's name: scope["extensions"][DIRECT_WRITES]["claim"](high_water=...),
# and ["start"](status, headers, high_water=...) before any head was sent; ["respond"](status,
# headers, body) writes a whole fixed-length response.
DIRECT_WRITES = "pushsite.transport"


class DirectWriter(Protocol):
    """The connection of one started, chunked response, as a stream writes to it."""

    def write(self, data: bytes) -> bool:
        """Write ``data`` as one body chunk without waiting; False when the connection is gone."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""

    @property
    def paused(self) -> bool:
        """True while the buffer is above the high-water mark given to ``claim``.

        A stream reads ``buffered()`` only while this is True (issue 16): unpaused, the
        buffer is at most that mark, below the stream's bound.
        """

    def paused_since(self) -> float | None:
        """``time.monotonic()`` when the buffer last went above the mark; None when it is below."""

    async def drain(self) -> None:
        """Wait until the buffer is below the mark again (or the connection is gone)."""

    def abort(self) -> None:
        """Drop the connection now, with whatever is still buffered."""

    def finish(self, last_words: bytes = b"") -> bool:
        """End the response after ``last_words`` and close; abort instead if the socket is full.

        False when the connection was gone or had to be aborted.
        """

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the connection is lost (at once if it already is)."""


Claim = Callable[..., DirectWriter | None]
Start = Callable[..., DirectWriter | None]
Respond = Callable[[int, Sequence[tuple[bytes, bytes]], bytes], bool]
Headers = tuple[tuple[bytes, bytes], ...]


def respond_direct(
    scope: Mapping[str, Any], status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> bool:
    """Write a whole response (head and body, one write) below ASGI, if the server offers it: True when written.

    For a small response whose bytes are ready (the JSON publish's 201, issue 17):
    the server checks and writes ``headers`` as its ``send`` would, after its own
    default headers, and completes the request's cycle (keep-alive kept), but in one
    write and without two ASGI messages. ``headers`` carry the ``content-length`` of
    ``body``. False (nothing written): send the response through ASGI as usual.
    """
    offer = (scope.get("extensions") or {}).get(DIRECT_WRITES)
    if not offer or "respond" not in offer:
        return False
    respond: Respond = offer["respond"]
    return respond(status, headers, body)


def start_direct_response(
    scope: Mapping[str, Any], status: int, headers: Headers, *, high_water: int
) -> DirectWriter | None:
    """Start a chunked response and own its connection at once, if the server offers it; else None.

    The server writes ``status`` and ``headers`` (plus its own default headers and
    chunked framing) with the first chunk, in one write: no ``http.response.start``
    through ASGI. None: send the head through ASGI, then try
    :func:`claim_direct_writer`. ``headers`` must be the same tuple for the same
    head (the server encodes each distinct head once).
    """
    offer = (scope.get("extensions") or {}).get(DIRECT_WRITES)
    if not offer or "start" not in offer:
        return None
    start: Start = offer["start"]
    return start(status, headers, high_water=high_water)


def claim_direct_writer(scope: Mapping[str, Any], *, high_water: int) -> DirectWriter | None:
    """The connection's direct writer, if the server offers one for this response; else None.

    Call after ``http.response.start`` has been sent; once it returns a writer,
    the response is the caller's alone (send nothing more through ASGI).
    ``high_water``: above it the writer reports ``paused`` (the stream's replay
    pacing mark).
    """
    offer = (scope.get("extensions") or {}).get(DIRECT_WRITES)
    if not offer:
        return None
    claim: Claim = offer["claim"]
    return claim(high_water=high_water)
