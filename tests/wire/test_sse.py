"""The SSE encoder, byte for byte, and the decoder that reads it back."""

from __future__ import annotations

import pytest

from events.wire import sse


@pytest.mark.parametrize(
    ("data", "event", "id", "expected"),
    [
        ("hello", None, None, b"data: hello\n\n"),
        ("hello", "tick", "7", b"id: 7\nevent: tick\ndata: hello\n\n"),
        ("", None, None, b"data: \n\n"),
        ("a\nb", None, None, b"data: a\ndata: b\n\n"),
        ("a\r\nb", None, None, b"data: a\ndata: b\n\n"),
        ("a\rb", None, None, b"data: a\ndata: b\n\n"),
        ("a\n\nb", None, None, b"data: a\ndata: \ndata: b\n\n"),
        ("trailing\n", None, None, b"data: trailing\ndata: \n\n"),
        (
            "x\n\nid: 666\nevent: forged\ndata: evil",
            None,
            None,
            b"data: x\ndata: \ndata: id: 666\ndata: event: forged\ndata: data: evil\n\n",
        ),
        ("nul\x00inside", None, None, b"data: nul\x00inside\n\n"),
        ("ok", "tick\nevent: forged", None, b"event: tickevent: forged\ndata: ok\n\n"),
        ("ok", "a\r\nb\rc", None, b"event: abc\ndata: ok\n\n"),
        ("ok", None, "1\n\ndata: forged", b"id: 1data: forged\ndata: ok\n\n"),
        ("ok", None, "4\x002", b"id: 42\ndata: ok\n\n"),
        ("ok", "ev\x00il", "1\r2", b"id: 12\nevent: evil\ndata: ok\n\n"),
        # Unicode line breaks never stay in a single-line field.
        ("ok", "a\u2028b\u2029c\x85d", "1\u20282\x853", b"id: 123\nevent: abcd\ndata: ok\n\n"),
        ("caf\u00e9 \u2028 \U0001f600", None, None, "data: caf\u00e9 \u2028 \U0001f600\n\n".encode()),
    ],
)
def test_encode_event(data: str, event: str | None, id: str | None, expected: bytes) -> None:
    assert sse.encode_event(data, event=event, id=id) == expected


def test_fields_plus_id_line_is_the_whole_event() -> None:
    assert sse.encode_id("5") + sse.encode_fields("x", event="e") == sse.encode_event("x", event="e", id="5")


def test_an_event_with_only_an_id_moves_the_position_and_dispatches_nothing() -> None:
    decoder = sse.Decoder()
    assert decoder.feed("id: 9\n\n") == []
    assert decoder.last_event_id == "9"


def test_retry_and_comment() -> None:
    # A line, never a block of its own: it begins the open event (events/wire/frames.py).
    assert sse.encode_retry(2000) == b"retry: 2000\n"
    assert sse.KEEPALIVE == b": keep-alive\n\n"
    assert sse.encode_comment("a\nb") == b": a\n: b\n\n"


@pytest.mark.parametrize(
    "data", ["plain", "two\nlines", "cr\rlf\r\nmix\n", "", "\n", "id: 3\n\nevent: x", "nul\x00"]
)
def test_decoder_round_trips_any_data(data: str) -> None:
    decoder = sse.Decoder()
    encoded = sse.encode_event(data, event="kind", id="12").decode()
    # Fed in awkward pieces, including a CR and LF split across chunks.
    events = []
    for start in range(0, len(encoded), 3):
        events.extend(decoder.feed(encoded[start : start + 3]))
    assert len(events) == 1
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert (events[0].data, events[0].event, events[0].id) == (expected, "kind", "12")


def test_decoder_keeps_retry_and_counts_comments() -> None:
    decoder = sse.Decoder()
    assert decoder.feed("retry: 1500\n\n: keep-alive\n\n") == []
    assert decoder.retry == 1500
    assert decoder.comments == 1


def test_decoder_says_which_events_carried_their_own_id() -> None:
    decoder = sse.Decoder()
    events = decoder.feed("id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid: 3\ndata: d\n\n")
    assert [(e.data, e.id, e.has_id) for e in events] == [
        ("a", "1", True),
        ("b", "1", False),  # inherits the id, as a browser reports it
        ("c", "2", False),  # the id came in an event of its own, which fired nothing
        ("d", "3", True),
    ]


def test_decoder_bounds_what_it_holds() -> None:
    decoder = sse.Decoder()
    decoder.feed("data: abc\ndata: de")
    assert decoder.buffered() == len("abc\n") + len("data: de")


@pytest.mark.parametrize("pieces", [["\ufeffdata: a\n\n"], ["\ufeff", "data: a\n\n"]])
def test_decoder_ignores_one_leading_byte_order_mark(pieces: list[str]) -> None:
    # The HTML spec: one leading U+FEFF is ignored; it is not part of the first field's name.
    decoder = sse.Decoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    assert [(e.event, e.data) for e in events] == [("message", "a")]
    # Only at the very start: later it is a character like any other.
    assert [e.data for e in decoder.feed("data: \ufeffb\n\n")] == ["\ufeffb"]


def test_decoder_ignores_only_one_byte_order_mark() -> None:
    assert sse.Decoder().feed("\ufeff\ufeffdata: a\n\n") == []  # a field called "\ufeffdata"
