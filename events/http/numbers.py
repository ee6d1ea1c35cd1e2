"""Whole numbers written by clients (query strings, headers): ASCII digits only, of bounded length.

One rule for every path that reads one: ``str.isdigit()`` also takes "²" or "٣",
which ``int()`` refuses (a 500) or reads as a number no client meant; and a
thousand digits is not a count anyone asked for.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def whole_number(raw: str, *, max_digits: int) -> int | None:
    """``raw`` as an int when it is 1 to ``max_digits`` ASCII digits; otherwise None."""
    if not 0 < len(raw) <= max_digits or not _DIGITS.fullmatch(raw):
        return None
    return int(raw)
