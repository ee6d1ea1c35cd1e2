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
_LINE_BREAKS = re.compile(r"[\r\n]+")
_ONE_LINE_BREAK = frozenset({"\r", "\n", "\r\n"})
_FIELD_FORBIDDEN = re.compile("[\r\n\x00\u2028\u2029\x85]")
# retry: ASCII digits only (str.isdigit() also takes "²", which int() refuses), and
# few enough of them that a hostile value is ignored rather than a huge number.
_RETRY = re.compile(r"[0-9]{1,10}")


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

    Work is linear in the text fed, however it is cut into pieces: each piece is
    scanned once, and a line that spans pieces is joined once, when it ends.
    """

    def __init__(self) -> None:
        self._partial: list[str] = []  # the pieces of a line not yet ended
        self._partial_length = 0
        self._after_cr = False  # the last piece ended in CR: an LF next is its CRLF
        self._data: list[str] = []
        self._data_length = 0
        self._event = ""
        self._id_seen = False
        self._begun = False  # text has been fed: a BOM now is a character like any other
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, text: str) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        start = 0
        if self._after_cr and text.startswith("\n"):
            start = 1
        if not self._begun and text:
            # The spec: one leading U+FEFF is ignored (else the first field's name holds it).
            self._begun = True
            if text.startswith("\ufeff"):
                start = 1
        if text:
            self._after_cr = False
        # A run of line breaks is one match: the line before it ends, and if the run
        # holds more than one break, a blank line follows (one is as good as many), so a
        # body of nothing but line breaks costs no Python per line.
        for match in _LINE_BREAKS.finditer(text, start):
            line = text[start : match.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial, self._partial_length = [], 0
            start = match.end()
            event = self._line(line)
            if event is not None:
                events.append(event)
            if match.group() not in _ONE_LINE_BREAK:
                event = self._line("")
                if event is not None:
                    events.append(event)
        if start < len(text):
            self._partial.append(text[start:])
            self._partial_length += len(text) - start
        elif text.endswith("\r"):
            # A CR ends its line at once (nothing waits for the next piece); an LF
            # that starts the next piece is the rest of a CRLF, not a blank line.
            self._after_cr = True
        return events

    def buffered(self) -> int:
        """Characters held for an event not yet complete (to bound it).

        Each data line counts one more than its length (the LF that will join it),
        so a run of empty ``data:`` lines counts too.
        """
        return self._partial_length + self._data_length + len(self._event)

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
            self._data_length += len(value) + 1
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
            self._id_seen = True
        elif name == "retry" and _RETRY.fullmatch(value):
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, has_id = self._data, self._event, self._id_seen
        self._data, self._data_length, self._event, self._id_seen = [], 0, "", False
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event or "message", self.last_event_id, has_id)
