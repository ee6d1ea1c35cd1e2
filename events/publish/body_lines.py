"""Reading a streamed request body as it arrives: NDJSON lines or SSE events, one part each.

Both parsers take the body chunk by chunk and yield each part as soon as its
line (or event) is complete, so the caller publishes it before the next one is
parsed: when line 7 is invalid, lines 1 to 6 are already out and nothing after
is read. Every buffer is bounded by the largest message.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from events.exceptions import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from events.publish.validate import data_or_text, read_message, validate_event_type
from events.wire.sse import EVENT_STREAM, Decoder

# At most this much of a body is parsed before the event loop gets a turn: a chunk of
# nothing but line breaks is one line per byte (issue 13: other requests wait at most
# a few milliseconds).
SLICE_BYTES = 4096

# A line of NDJSON that holds more than whitespace, without its LF.
_FILLED_LINE = re.compile(rb"^[ \t\r\f\v]*[^\s][^\n]*", re.MULTILINE)

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


@dataclass(frozen=True, slots=True)
class Part:
    event: str
    data: Any


class BodyParser(Protocol):
    def feed(self, chunk: bytes) -> Iterator[Part]: ...

    def close(self) -> Iterator[Part]: ...


class NdjsonBody:
    """One message per line: ``{"event": "<type>", "data": <any JSON>}``, as POST .../messages takes."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.line_number = 0
        # The pieces of a line not yet ended: joined once, when it ends, so a long
        # line arriving in many small chunks costs its length, not its length squared.
        self._pending: list[bytes] = []
        self._pending_length = 0

    def feed(self, chunk: bytes) -> Iterator[Part]:
        end = chunk.rfind(b"\n") + 1  # the complete lines are chunk[:end]
        if self._pending and end:
            first = chunk.index(b"\n")
            self._pending.append(chunk[:first])
            line = b"".join(self._pending)
            self._pending, self._pending_length = [], 0
            part = self._line(line)
            if part is not None:
                yield part
            start = first + 1
        else:
            start = 0
        # Only lines with something in them cost Python; the blank ones between are
        # counted at C speed (a body of line breaks is one line per byte).
        for match in _FILLED_LINE.finditer(chunk, start, end):
            self.line_number += chunk.count(b"\n", start, match.start())  # blank lines
            start = match.end() + 1  # after the line's LF: _line counts the line
            part = self._line(match.group())
            if part is not None:
                yield part
        self.line_number += chunk.count(b"\n", start, end)
        rest = chunk[end:]
        if rest:
            self._pending.append(rest)
            self._pending_length += len(rest)
        if self._pending_length > self.max_line_bytes:
            raise PayloadTooLarge(
                f"Line {self.line_number + 1} is longer than the limit of {self.max_line_bytes} bytes."
            )

    def close(self) -> Iterator[Part]:
        """The last line, when the body does not end with a newline."""
        rest = b"".join(self._pending)
        self._pending, self._pending_length = [], 0
        part = self._line(rest)
        if part is not None:
            yield part

    def _line(self, line: bytes) -> Part | None:
        self.line_number += 1
        if len(line) > self.max_line_bytes:
            raise PayloadTooLarge(
                f"Line {self.line_number} is longer than the limit of {self.max_line_bytes} bytes."
            )
        line = line.strip()
        if not line:
            return None  # blank lines are allowed (a publisher's keep-alive)
        event, data = read_message(line, where=f"Line {self.line_number}")
        return Part(event, data)


class EventStreamBody:
    """A ``text/event-stream`` body: each event is a part (its type, its data as JSON if it parses, else text)."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.event_number = 0
        self._decoder = Decoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk: bytes) -> Iterator[Part]:
        try:
            text = self._utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"Event {self.event_number + 1} is not valid UTF-8: {exc}.") from exc
        for event in self._decoder.feed(text):
            self.event_number += 1
            yield self._part(event.event, event.data)
        if self._decoder.buffered() > self.max_event_bytes:
            raise PayloadTooLarge(
                f"Event {self.event_number + 1} is longer than the limit of {self.max_event_bytes} bytes."
            )

    def close(self) -> Iterator[Part]:
        """An event the body ended without its blank line is still an event."""
        yield from self.feed(b"\n\n")

    def _part(self, event: str, data: str) -> Part:
        try:
            validate_event_type(event)
        except InvalidInput as exc:
            raise InvalidInput(f"Event {self.event_number}: {exc.detail}") from None
        return Part(event, data_or_text(data, subject=f"Event {self.event_number}'s data"))


def body_parser(content_type: str | None, *, max_line_bytes: int) -> BodyParser:
    """The parser for a body of this Content-Type; 415 for any other."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in NDJSON_TYPES:
        return NdjsonBody(max_line_bytes)
    if media_type == EVENT_STREAM:
        return EventStreamBody(max_line_bytes)
    raise UnsupportedMediaType(
        "Send the stream as application/x-ndjson (one JSON message per line) or text/event-stream; "
        f"got {media_type[:60] or 'no Content-Type'!r}."
    )
