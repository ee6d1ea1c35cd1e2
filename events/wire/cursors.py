"""Stream positions (the SSE ``id``) and their parsing from ``Last-Event-ID``.

A stream of one channel uses that channel's sequence number as its id (``42``),
the same number the JSON API calls ``id``. A stream of several channels uses
``slug:sequence`` pairs joined by commas (``news:42,scores:7``), so one id
resumes every channel of the stream exactly where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from events.exceptions import InvalidInput

MAX_SEQUENCE = 2**63 - 1
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")
_NUMBER = re.compile(r"[0-9]{1,19}")
_PAIR = re.compile(r"([-a-zA-Z0-9_]{1,50}):([0-9]{1,19})")


def _to_sequence(text: str) -> int:
    value = int(text)
    if value > MAX_SEQUENCE:
        raise InvalidInput("Last-Event-ID holds a number that is too large.")
    return value


def parse_cursor(raw: str | None, slugs: Iterable[str], *, max_length: int) -> dict[str, int]:
    """Positions by slug for the channels of this stream; empty when ``raw`` is empty."""
    if raw is None or raw == "":
        return {}
    if len(raw) > max_length:
        raise InvalidInput(f"Last-Event-ID is longer than {max_length} characters.")
    wanted = list(slugs)
    if _NUMBER.fullmatch(raw):
        if len(wanted) != 1:
            raise InvalidInput(
                "Last-Event-ID must name each channel (slug:id,slug:id) on a stream of several channels."
            )
        return {wanted[0]: _to_sequence(raw)}
    positions: dict[str, int] = {}
    for part in raw.split(","):
        match = _PAIR.fullmatch(part)
        if match is None:
            raise InvalidInput(
                "Last-Event-ID must be an event id this server sent: "
                "a number, or slug:number pairs joined by commas."
            )
        slug, number = match.groups()
        if slug in positions:
            raise InvalidInput(f"Last-Event-ID names the channel {slug!r} twice.")
        positions[slug] = _to_sequence(number)
    # Channels the stream does not carry are ignored, so a saved id keeps
    # working when a page subscribes to fewer channels than before.
    return {slug: seq for slug, seq in positions.items() if slug in wanted}


def format_cursor(positions: Mapping[str, int], order: Iterable[str]) -> str:
    """The id for a stream whose channels (in ``order``) stand at ``positions``."""
    slugs = list(order)
    if len(slugs) == 1:
        return str(positions[slugs[0]])
    return ",".join(f"{slug}:{positions[slug]}" for slug in slugs)
