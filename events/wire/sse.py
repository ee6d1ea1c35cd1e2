"""The Server-Sent Events wire format, as a pure module (no Django import).

Every value a publisher controls passes through here. SSE ends a line at CR,
LF or CRLF, and a NUL in an ``id`` makes browsers ignore it, so:

* ``id`` and ``event`` lose every CR, LF and NUL (they are single-line fields),
  and the Unicode line breaks U+2028, U+2029 and U+0085 too, for clients that
  split lines on every Unicode line break (``str.splitlines()``);
* ``data`` is split on every line ending and each piece gets its own
  ``data:`` line, which the browser joins back with LF.

No input can therefore add a field or end an event early (SSE injection).
Pushsite's own events carry JSON in ``data``, where the Unicode line breaks are
escaped instead (events/wire/frames.py), so no field Pushsite sends holds one raw.
"""

from __future__ import annotations

import re

EVENT_STREAM = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"

# Every SSE line terminator, so data is split exactly as a browser would.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_FORBIDDEN = re.compile("[\r\n\x00\u2028\u2029\x85]")


def single_line(value: str) -> str:
    """Drop CR, LF, NUL and the Unicode line breaks so that ``value`` cannot end its field."""
    return _FIELD_FORBIDDEN.sub("", value)


def encode_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one complete event (ending in a blank line) as UTF-8 bytes."""
    lines: list[str] = []
    if id is not None:
        lines.append(f"id: {single_line(id)}")
    if event is not None:
        lines.append(f"event: {single_line(event)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def encode_fields(data: str, *, event: str | None = None) -> bytes:
    """Encode an event without its ``id`` line, to prepend one per stream later."""
    return encode_event(data, event=event)


def encode_id(id: str) -> bytes:
    """The ``id:`` line alone; prepended to ``encode_fields`` output."""
    return f"id: {single_line(id)}\n".encode()


def encode_retry(milliseconds: int) -> bytes:
    """The reconnection-delay hint as one line, to begin an event that carries data.

    Never a block of its own: lenient parsers (httpx-sse) yield a block without
    ``data:`` as an empty message.
    """
    return f"retry: {int(milliseconds)}\n".encode()


def encode_comment(text: str) -> bytes:
    """A comment line, ignored by clients (used as a keep-alive)."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"


class ServerSentEvent:
    """One decoded event (what a browser's EventSource would dispatch).

    ``id`` is the stream's last event id when the event fired, as a browser
    reports it; ``has_id`` says whether this event set it with its own ``id:``
    line (an event without one inherits the previous id).
    """

    __slots__ = ("data", "event", "has_id", "id")

    def __init__(self, data: str, event: str, id: str, has_id: bool = False) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.has_id = has_id

    def __repr__(self) -> str:
        return f"ServerSentEvent(id={self.id!r}, event={self.event!r}, data={self.data!r})"


class Decoder:
    """Incremental SSE parser following the HTML spec's rules.

    Feed it text as it arrives; it returns the events completed so far. It keeps
    ``last_event_id`` (for reconnecting) and ``retry`` (the server's hint, ms).
    Comment lines are counted in ``comments`` so callers can see keep-alives.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._id_seen = False
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, text: str) -> list[ServerSentEvent]:
        self._buffer += text
        events: list[ServerSentEvent] = []
        while True:
            match = _LINE_BREAK.search(self._buffer)
            if match is None:
                break
            # A lone CR at the very end may be the first half of CRLF.
            if match.group() == "\r" and match.end() == len(self._buffer):
                break
            line = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def buffered(self) -> int:
        """Characters held for an event not yet complete (to bound it)."""
        return len(self._buffer) + sum(len(line) for line in self._data)

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
            self._id_seen = True
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, has_id = self._data, self._event, self._id_seen
        self._data, self._event, self._id_seen = [], "", False
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event or "message", self.last_event_id, has_id)
