from __future__ import annotations

import pytest

from events.exceptions import InvalidInput
from events.wire.cursors import Position, format_cursor, id_suffix, parse_cursor


@pytest.mark.parametrize(
    ("raw", "slugs", "expected"),
    [
        (None, ["a"], {}),
        ("", ["a"], {}),
        # Ids without an epoch (sent before epochs existed; the JSON API's ids): still accepted.
        ("42", ["a"], {"a": Position(42, None)}),
        ("a:3,b:7", ["a", "b"], {"a": Position(3), "b": Position(7)}),
        ("b:7", ["a", "b"], {"b": Position(7)}),
        ("a:3,gone:9", ["a"], {"a": Position(3)}),
        ("a:0", ["a"], {"a": Position(0)}),
        # With the channel's epoch.
        ("42~3fa9c0b1", ["a"], {"a": Position(42, "3fa9c0b1")}),
        ("a:3~0c1d2e3f,b:7~aa", ["a", "b"], {"a": Position(3, "0c1d2e3f"), "b": Position(7, "aa")}),
        ("a:3~0c1d2e3f,b:7", ["a", "b"], {"a": Position(3, "0c1d2e3f"), "b": Position(7, None)}),
    ],
)
def test_parse(raw: str | None, slugs: list[str], expected: dict[str, Position]) -> None:
    assert parse_cursor(raw, slugs, max_length=1024) == expected


@pytest.mark.parametrize(
    ("raw", "slugs", "message"),
    [
        ("-1", ["a"], "event id this server sent"),
        ("1.5", ["a"], "event id this server sent"),
        ("a:1,a:2", ["a"], "twice"),
        ("7", ["a", "b"], "must name each channel"),
        ("7~ab", ["a", "b"], "must name each channel"),
        ("99999999999999999999", ["a"], "event id this server sent"),
        ("9223372036854775808", ["a"], "too large"),
        ("x" * 2000, ["a"], "longer than"),
        ("a:1;b:2", ["a", "b"], "event id this server sent"),
        ("a:1\n", ["a"], "event id this server sent"),
        ("4~", ["a"], "event id this server sent"),
        ("4~AB", ["a"], "event id this server sent"),
        ("4~" + "a" * 17, ["a"], "event id this server sent"),
        ("a:4~ab~cd", ["a"], "event id this server sent"),
        ("~ab", ["a"], "event id this server sent"),
    ],
)
def test_parse_rejects(raw: str, slugs: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_cursor(raw, slugs, max_length=1024)


def test_format_round_trips() -> None:
    epochs = {"a": "3fa9c0b1", "b": "0c1d2e3f"}
    assert format_cursor({"a": 4}, ["a"], epochs) == "4~3fa9c0b1"
    assert format_cursor({"a": 4, "b": 0}, ["b", "a"], epochs) == "b:0~0c1d2e3f,a:4~3fa9c0b1"
    assert parse_cursor(format_cursor({"a": 4, "b": 0}, ["a", "b"], epochs), ["a", "b"], max_length=99) == {
        "a": Position(4, "3fa9c0b1"),
        "b": Position(0, "0c1d2e3f"),
    }


def test_without_an_epoch_the_id_is_the_bare_number() -> None:
    assert format_cursor({"a": 4}, ["a"], {"a": ""}) == "4"
    assert id_suffix("") == b"\n"
    assert id_suffix("3fa9c0b1") == b"~3fa9c0b1\n"


def test_ten_channels_with_the_longest_slugs_fit_the_default_cursor_length() -> None:
    slugs = [f"{n}" + "s" * 49 for n in range(10)]
    cursor = format_cursor(dict.fromkeys(slugs, 2**63 - 1), slugs, dict.fromkeys(slugs, "f" * 8))
    assert len(cursor) <= 1024
    assert parse_cursor(cursor, slugs, max_length=1024)[slugs[0]] == Position(2**63 - 1, "f" * 8)
