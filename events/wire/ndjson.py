"""The NDJSON subscription format, as a pure module (no Django import).

Streams produce SSE frames (events/deliver/stream.py); an NDJSON subscriber gets each
frame rewritten as one line at the ASGI send boundary, so the SSE hot path does
no extra work. A frame's line is its single ``data:`` line (the envelope JSON,
which escapes every line break) with a ``"cursor"`` field holding exactly what
the ``id:`` line said. A frame with only an id becomes ``{"cursor": ...}`` (the
resume point), and a keep-alive comment becomes an empty line.
"""

from __future__ import annotations

import json

NDJSON = "application/x-ndjson"
HEARTBEAT = b"\n"

_DATA = b"data: "
_ID = b"id: "
# Characters that json.dumps(ensure_ascii=False) leaves raw but that
# str.splitlines() (requests' iter_lines(decode_unicode=True), for one) treats
# as line breaks: escaped, so one event is always exactly one line.
_SEPARATORS = (
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
    ("\x85".encode(), b"\\u0085"),
)


def _cursor_json(cursor: bytes) -> bytes:
    return json.dumps(cursor.decode("utf-8", "replace")).encode()


def frame_to_line(frame: bytes) -> bytes:
    """One SSE frame (without its blank line) as an NDJSON line, or b"" for nothing to say."""
    cursor: bytes | None = None
    data: bytes | None = None
    comment = False
    for line in frame.split(b"\n"):
        if line.startswith(_DATA):
            data = line[len(_DATA) :]
        elif line.startswith(_ID):
            cursor = line[len(_ID) :]
        elif line.startswith(b":"):
            comment = True
    if data is not None:
        for raw, escaped in _SEPARATORS:
            if raw in data:
                data = data.replace(raw, escaped)
        if cursor is not None and data.endswith(b"}"):
            return data[:-1] + b',"cursor":' + _cursor_json(cursor) + b"}\n"
        return data + b"\n"
    if cursor is not None:
        return b'{"cursor":' + _cursor_json(cursor) + b"}\n"
    return HEARTBEAT if comment else b""


def from_sse(body: bytes) -> bytes:
    """Whole SSE frames (as a stream writes them, possibly several) as NDJSON lines."""
    return b"".join(frame_to_line(frame) for frame in body.split(b"\n\n") if frame)
