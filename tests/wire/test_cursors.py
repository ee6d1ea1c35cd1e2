from __future__ import annotations

import pytest

from events.exceptions import InvalidInput
from events.wire.cursors import format_cursor, parse_cursor


@pytest.mark.parametrize(
    ("raw", "slugs", "expected"),
    [
        (None, ["a"], {}),
        ("", ["a"], {}),
        ("42", ["a"], {"a": 42}),
        ("a:3,b:7", ["a", "b"], {"a": 3, "b": 7}),
        ("b:7", ["a", "b"], {"b": 7}),
        ("a:3,gone:9", ["a"], {"a": 3}),
        ("a:0", ["a"], {"a": 0}),
    ],
)
def test_parse(raw: str | None, slugs: list[str], expected: dict[str, int]) -> None:
    assert parse_cursor(raw, slugs, max_length=1024) == expected


@pytest.mark.parametrize(
    ("raw", "slugs", "message"),
    [
        ("-1", ["a"], "event id this server sent"),
        ("1.5", ["a"], "event id this server sent"),
        ("a:1,a:2", ["a"], "twice"),
        ("7", ["a", "b"], "must name each channel"),
        ("99999999999999999999", ["a"], "event id this server sent"),
        ("9223372036854775808", ["a"], "too large"),
        ("x" * 2000, ["a"], "longer than"),
        ("a:1;b:2", ["a", "b"], "event id this server sent"),
        ("a:1\n", ["a"], "event id this server sent"),
    ],
)
def test_parse_rejects(raw: str, slugs: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_cursor(raw, slugs, max_length=1024)


def test_format_round_trips() -> None:
    assert format_cursor({"a": 4}, ["a"]) == "4"
    assert format_cursor({"a": 4, "b": 0}, ["b", "a"]) == "b:0,a:4"
    assert parse_cursor(format_cursor({"a": 4, "b": 0}, ["a", "b"]), ["a", "b"], max_length=99) == {
        "a": 4,
        "b": 0,
    }
