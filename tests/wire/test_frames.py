"""Pushsite's events as SSE bytes: every producer, byte for byte, safe for every client's idea of a line."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.wire import frames, sse

MOMENT = datetime(2026, 11, 21, 15, 29, 50, 892000, tzinfo=UTC)
# U+2028, U+2029 and U+0085: line breaks for str.splitlines(), not for SSE.
BREAKS = "a\u2028b\u2029c\x85d"


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (
            frames.message_fields(
                slug="news", sequence=1, event="notice", data={"text": "Hello"}, published_at=MOMENT
            ),
            b'event: notice\ndata: {"id":1,"channel":"news","event":"notice","data":{"text":"Hello"},'
            b'"published_at":"2026-11-21T15:29:50.892Z"}\n\n',
        ),
        (
            frames.message_fields(slug="news", sequence=2, event="message", data=BREAKS, published_at=MOMENT),
            b'event: message\ndata: {"id":2,"channel":"news","event":"message","data":"a\\u2028b\\u2029c\\u0085d",'
            b'"published_at":"2026-11-21T15:29:50.892Z"}\n\n',
        ),
        (
            frames.message_fields(
                slug="news",
                sequence=3,
                event="message",
                data={BREAKS: ["x\ny", "caf\u00e9"]},
                published_at=MOMENT,
            ),
            'event: message\ndata: {"id":3,"channel":"news","event":"message",'
            '"data":{"a\\u2028b\\u2029c\\u0085d":["x\\ny","caf\u00e9"]},'
            '"published_at":"2026-11-21T15:29:50.892Z"}\n\n'.encode(),
        ),
        (
            frames.ephemeral_fields(slug="lobby", event="typing", data={"who": BREAKS}, published_at=MOMENT),
            b'event: typing\ndata: {"channel":"lobby","event":"typing","data":{"who":"a\\u2028b\\u2029c\\u0085d"},'
            b'"published_at":"2026-11-21T15:29:50.892Z"}\n\n',
        ),
        (
            frames.reset_fields(slug="news", requested_after=5, resumed_after=9, reason=BREAKS),
            b'event: pushsite.reset\ndata: {"channel":"news","event":"pushsite.reset",'
            b'"data":{"reason":"a\\u2028b\\u2029c\\u0085d","requested_after":5,"resumed_after":9}}\n\n',
        ),
        (
            frames.close_fields(BREAKS),
            b'event: pushsite.close\ndata: {"event":"pushsite.close","reason":"a\\u2028b\\u2029c\\u0085d"}\n\n',
        ),
        (
            frames.open_frame(["news"], cursor="0", retry_milliseconds=2000),
            b'retry: 2000\nid: 0\nevent: pushsite.open\ndata: {"event":"pushsite.open","channels":["news"]}\n\n',
        ),
        (
            frames.open_frame(["news", "scores"], cursor="news:3,scores:7", retry_milliseconds=1500),
            b"retry: 1500\nid: news:3,scores:7\nevent: pushsite.open\n"
            b'data: {"event":"pushsite.open","channels":["news","scores"]}\n\n',
        ),
    ],
)
def test_frames_byte_for_byte(produced: bytes, expected: bytes) -> None:
    assert produced == expected


@pytest.mark.parametrize(
    "produced",
    [
        frames.message_fields(slug="news", sequence=7, event="message", data=BREAKS, published_at=MOMENT),
        frames.ephemeral_fields(slug="news", event="message", data=[BREAKS], published_at=MOMENT),
        frames.reset_fields(slug="news", requested_after=1, resumed_after=2, reason=BREAKS),
        frames.close_fields(BREAKS),
        frames.open_frame([BREAKS], cursor=BREAKS, retry_milliseconds=10),
    ],
)
def test_every_block_reads_the_same_to_a_client_that_splits_on_every_unicode_line_break(
    produced: bytes,
) -> None:
    text = produced.decode()
    for separator in ("\u2028", "\u2029", "\x85"):
        assert separator not in text
    # str.splitlines() and the SSE rules agree on where the lines are.
    assert text.splitlines() == text.split("\n")[:-1]
    # Exactly one event with data, as a strict or a lenient parser reads it.
    events = sse.Decoder().feed(text)
    assert len(events) == 1
    assert events[0].data.startswith("{")


def test_an_event_block_always_carries_data() -> None:
    """No block made only of ``retry:`` or ``id:`` (httpx-sse yields those as empty messages)."""
    opening = frames.open_frame(["news"], cursor="4", retry_milliseconds=2000).decode()
    blocks = [block for block in opening.split("\n\n") if block]
    assert len(blocks) == 1
    assert "\ndata: " in blocks[0]


def _calls(tree: ast.AST, names: set[str]) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                found.append((name, node.lineno))
    return found


def test_frames_encode_is_the_only_producer_of_event_fields() -> None:
    """A new producer that encodes its own SSE fields (and so skips the escaping) fails here."""
    root = Path(__file__).resolve().parents[2] / "events"
    producers = {}
    for path in root.rglob("*.py"):
        if path.parent.name == "wire" and path.name == "sse.py":
            continue
        calls = _calls(ast.parse(path.read_text()), {"encode_fields", "encode_event"})
        if calls:
            producers[str(path.relative_to(root))] = calls
    assert list(producers) == ["wire/frames.py"]
    # ... and within it, only from encode().
    frames_tree = ast.parse((root / "wire" / "frames.py").read_text())
    encode = next(n for n in frames_tree.body if isinstance(n, ast.FunctionDef) and n.name == "encode")
    assert len(_calls(encode, {"encode_fields", "encode_event"})) == len(producers["wire/frames.py"])
