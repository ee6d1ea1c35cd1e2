"""Streamed request bodies, parsed as they arrive: NDJSON lines and SSE events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from events.exceptions import InvalidInput, PayloadTooLarge, PushsiteError, UnsupportedMediaType
from events.publish.body_lines import BodyParser, EventStreamBody, NdjsonBody, Part, body_parser

NDJSON_BODY = (
    b'{"data": "a"}\n'
    b"\n"  # blank lines are keep-alives
    b'{"event": "token", "data": {"n": 2}}\r\n'
    b'{"data": null}'  # the last line needs no newline
)
NDJSON_PARTS = [Part("message", "a"), Part("token", {"n": 2}), Part("message", None)]


def chunks(body: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def parse(parser: BodyParser, body: bytes, size: int = 1_000_000) -> list[Part]:
    parts = [part for chunk in chunks(body, size) for part in parser.feed(chunk)]
    return parts + list(parser.close())


@pytest.mark.parametrize("size", [1, 3, 7, 1_000_000])
def test_ndjson_lines_whatever_the_chunking(size: int) -> None:
    assert parse(NdjsonBody(1000), NDJSON_BODY, size) == NDJSON_PARTS


def test_ndjson_parts_before_a_bad_line_come_out_before_the_error() -> None:
    parts = NdjsonBody(1000).feed(b'{"data": 1}\n\n{"data": 2}\n[3]\n{"data": 4}\n')
    assert next(parts) == Part("message", 1)
    assert next(parts) == Part("message", 2)
    with pytest.raises(InvalidInput) as error:
        next(parts)
    assert error.value.detail == ('Line 4 must be a JSON object: {"event": "<type>", "data": <any JSON>}.')


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (b"{nope", "Line 1 is not valid JSON: "),
        (b"\xff", "Line 1 is not valid JSON: "),
        (b'{"event": "x"}', "Line 1: The field 'data' is required"),
        (b'{"data": 1, "evnt": "x"}', "Line 1: Unknown field 'evnt'"),
        (b'{"data": 1, "event": "a b"}', "Line 1: event must be 1 to 64 characters"),
        (
            b'{"data": 1, "event": "pushsite.stream.end"}',
            "Line 1: event types starting with 'pushsite.' are reserved",
        ),
    ],
)
def test_ndjson_bad_lines_name_their_number_and_the_problem(line: bytes, detail: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse(NdjsonBody(1000), line + b"\n")
    assert error.value.detail.startswith(detail)


def test_ndjson_line_over_the_limit_fails_before_it_ends() -> None:
    parser = NdjsonBody(10)
    assert list(parser.feed(b'{"data":1}\n')) == [Part("message", 1)]
    with pytest.raises(PayloadTooLarge) as error:
        list(parser.feed(b"x" * 11))  # no newline yet: the buffer is bounded anyway
    assert error.value.detail == "Line 2 is longer than the limit of 10 bytes."


SSE_BODY = (
    b": a comment\n"
    b"event: token\ndata: Hel\n\n"
    b'data: {"n": 2}\n\n'
    b"id: 9\nretry: 10\ndata: two\ndata: lines\r\n\r\n"
    b"data: [DONE]"  # ended without its blank line
)
SSE_PARTS = [
    Part("token", "Hel"),
    Part("message", {"n": 2}),
    Part("message", "two\nlines"),
    Part("message", "[DONE]"),
]


@pytest.mark.parametrize("size", [1, 5, 1_000_000])
def test_event_stream_body_whatever_the_chunking(size: int) -> None:
    assert parse(EventStreamBody(1000), SSE_BODY, size) == SSE_PARTS


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (b"data: 1\n\nevent: a b\ndata: 2\n\n", InvalidInput, "Event 2: event must be 1 to 64"),
        (b"event: pushsite.reset\ndata: 2\n\n", InvalidInput, "Event 1: event types starting with"),
        (b"data: \xff\n\n", InvalidInput, "Event 1 is not valid UTF-8"),
        (b"data: " + b"x" * 20, PayloadTooLarge, "Event 1 is longer than the limit of 10 bytes."),
    ],
)
def test_event_stream_body_errors(body: bytes, error: type[PushsiteError], detail: str) -> None:
    with pytest.raises(error) as raised:
        parse(EventStreamBody(10), body)
    assert raised.value.detail.startswith(detail)


@pytest.mark.parametrize(
    ("content_type", "parser"),
    [
        ("application/x-ndjson", NdjsonBody),
        ("application/x-ndjson; charset=utf-8", NdjsonBody),
        ("Application/NDJSON", NdjsonBody),
        ("application/jsonl", NdjsonBody),
        ("text/event-stream", EventStreamBody),
    ],
)
def test_body_parser_by_content_type(content_type: str, parser: type) -> None:
    assert isinstance(body_parser(content_type, max_line_bytes=10), parser)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain"])
def test_other_content_types_are_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/x-ndjson"):
        body_parser(content_type, max_line_bytes=10)


@pytest.mark.parametrize("size", [1, 2, 1_000_000])
def test_a_leading_byte_order_mark_is_no_lost_event(size: int) -> None:
    # A BOM is taken on the JSON API and NDJSON lines (utf-8-sig); a text/event-stream
    # body that starts with one lost its first event, answered 201 with 0 parts.
    body = SSE_BODY.removeprefix(b": a comment\n")  # the first line is a field, not a comment
    assert parse(EventStreamBody(1000), b"\xef\xbb\xbf" + body, size) == SSE_PARTS
