"""Reading a streamed request body as it arrives: NDJSON lines or SSE events, one part each.

Both parsers take the body chunk by chunk and yield each part as soon as its
line (or event) is complete, so the caller has it on its way before the next one
is parsed: when line 7 is invalid, lines 1 to 6 are published (the caller stores
them before it answers) and nothing after is read. Every buffer is bounded by the largest message.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from events.exceptions import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from events.publish.validate import data_or_text, read_message, validate_event_type
from events.wire.sse import EVENT_STREAM, Decoder

# Bytes of a body that publish nothing (blank lines, comments, fields of no event) are
# read at most this fast per stream, after the first IDLE_BURST_BYTES. Parsing a line
# break costs next to nothing now, but reading the body is uvicorn's work on the same
# event loop (about 1.5 ms per MiB before any parsing): unpaced, a flood of line breaks
# kept a third of a core busy and added 15-50 ms to a concurrent history read on a
# loaded 2-core machine, paced at 4 MiB/s about nothing (issue 13). A keep-alive needs
# a few bytes a minute; parts are paced by the publish rate instead.
IDLE_BYTES_PER_SECOND = 4 * 1024 * 1024
IDLE_BURST_BYTES = 1024 * 1024
# And the time spent parsing them: a comment line costs a Python step per line where a
# line break costs none, so after a slice of idle lines the stream waits this many
# times as long as they took (parsing gets at most a twentieth of the event loop).
IDLE_PARSE_WAIT = 19.0

# Every byte that is not whitespace becomes FILLED, every other stays (LF too): the
# first byte of the next line that holds something is then one memchr away (a regex
# tried at every blank position cost about 100 ns a byte, issue 13).
_WHITESPACE = b" \t\n\r\f\v"  # what bytes.strip() strips, so a line of these is blank
_FILLED = b"x"
_FILLED_MASK = bytes(byte if byte in _WHITESPACE else _FILLED[0] for byte in range(256))

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


@dataclass(frozen=True, slots=True)
class Part:
    event: str
    data: Any
    # The body bytes it was read from (an NDJSON line with its LF; an SSE event's field
    # values): what the body sent that was not idle (IdlePace).
    size: int = field(default=0, compare=False)


class BodyParser(Protocol):
    # At most this much of a body is parsed before the event loop gets a turn
    # (issue 13: other requests wait at most a few milliseconds).
    slice_bytes: int

    def feed(self, chunk: bytes) -> Iterator[Part]: ...

    def close(self) -> Iterator[Part]: ...


class NdjsonBody:
    """One message per line: ``{"event": "<type>", "data": <any JSON>}``, as POST .../messages takes."""

    # Only a line that publishes (or ends the stream) costs Python: a slice of line
    # breaks is a few C calls, about 0.1 ms for 64 KiB.
    slice_bytes = 64 * 1024

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
        # skipped and counted by C calls (a body of line breaks is one line per byte).
        mask = chunk.translate(_FILLED_MASK) if start < end else b""
        filled = mask.find(_FILLED, start, end)
        while filled >= 0:
            line_start = max(mask.rfind(b"\n", start, filled) + 1, start)
            line_end = mask.index(b"\n", filled, end)
            self.line_number += mask.count(b"\n", start, line_start)  # blank lines
            start = line_end + 1  # after the line's LF: _line counts the line
            part = self._line(chunk[line_start:line_end])
            if part is not None:
                yield part
            filled = mask.find(_FILLED, start, end)
        self.line_number += mask.count(b"\n", start, end)
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
        size = len(line) + 1  # with its LF (the last line may have none: near enough)
        line = line.strip()
        if not line:
            return None  # blank lines are allowed (a publisher's keep-alive)
        event, data = read_message(line, where=f"Line {self.line_number}")
        return Part(event, data, size)


class EventStreamBody:
    """A ``text/event-stream`` body: each event is a part (its type, its data as JSON if it parses, else text)."""

    # Every comment and ignored field is a Python step: a slice of ":\n" is 2,048 of
    # them, 1-3 ms.
    slice_bytes = 4096

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.event_number = 0
        self._decoder = Decoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk: bytes) -> Iterator[Part]:
        if len(chunk) > 4 and chunk.count(b"\n") + chunk.count(b"\r") == len(chunk):
            # Nothing but line breaks: to the decoder as good as the first two and the
            # last two (the line before ends, a blank line follows, a CR at the very end
            # may pair with an LF next), and counted at C speed (its regex took about
            # 15 ns a byte, issue 13).
            chunk = chunk[:2] + chunk[-2:]
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
        data_value = data_or_text(data, subject=f"Event {self.event_number}'s data")
        return Part(event, data_value, len(event) + len(data))


class IdlePace:
    """How long a stream waits before reading on, once its idle bytes outrun their pace.

    Bytes: a token bucket holding up to ``burst`` bytes, refilled at ``rate`` per
    second. Time: IDLE_PARSE_WAIT times what parsing them took.
    """

    def __init__(
        self,
        rate: float = IDLE_BYTES_PER_SECOND,
        burst: float = IDLE_BURST_BYTES,
        now: float | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic() if now is None else now
        self.wait = 0.0

    def read(self, parts: Iterator[Part], length: int) -> Iterator[Part]:
        """The parts of a slice of ``length`` bytes; after the last, ``wait`` is the pause before the next slice.

        Only the parser's own steps are timed, not what the caller does with each part.
        """
        idle, parsing = length, 0.0
        while True:
            started = time.perf_counter()
            part = next(parts, None)
            parsing += time.perf_counter() - started
            if part is None:
                break
            idle -= part.size
            yield part
        self.wait = self.charge(idle, parsing * max(idle, 0) / length if length else 0.0)

    def charge(self, idle_bytes: int, parse_seconds: float = 0.0, now: float | None = None) -> float:
        """Seconds to wait after ``idle_bytes`` more that published nothing (0: read on at once).

        ``parse_seconds``: the time parsing them took. A part read across slices makes
        a later slice's count negative: a credit.
        """
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - idle_bytes
        self._at = now
        return max(0.0, -self._tokens / self.rate, parse_seconds * IDLE_PARSE_WAIT)


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
