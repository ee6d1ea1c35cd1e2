"""Stream positions (the SSE ``id``) and their parsing from ``Last-Event-ID``.

A position names a channel's sequence number and the channel's *epoch*, a token
that differs between incarnations of a channel (deleted and re-created with the
same slug, or a new database), so a resume point from another incarnation is
detected instead of silently skipping what the new one holds.

A stream of one channel uses ``<sequence>~<epoch>`` as its id (``42~3fa9c0b1``);
a stream of several channels uses ``slug:<sequence>~<epoch>`` pairs joined by
commas (``news:42~3fa9c0b1,scores:7~0c1d2e3f``), so one id resumes every
channel of the stream exactly where it stopped. The forms without an epoch
(``42``, ``news:42,scores:7``: ids sent before epochs existed, and the
message ``id`` of the JSON API that pages use as a starting point) are still
accepted and mean "in the channel as it is now".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from events.exceptions import InvalidInput

MAX_SEQUENCE = 2**63 - 1
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")
EPOCH_SEPARATOR = "~"
_POSITION = r"([0-9]{1,19})(?:~([0-9a-z]{1,16}))?"
_SINGLE = re.compile(_POSITION)
_PAIR = re.compile(r"([-a-zA-Z0-9_]{1,50}):" + _POSITION)


class Position(NamedTuple):
    """Where a client stands in one channel; ``epoch`` is None for an id without one."""

    sequence: int
    epoch: str | None = None


def _to_sequence(text: str, name: str) -> int:
    value = int(text)
    if value > MAX_SEQUENCE:
        raise InvalidInput(f"{name} holds a number that is too large.")
    return value


def parse_cursor(
    raw: str | None, slugs: Iterable[str], *, max_length: int, name: str = "Last-Event-ID"
) -> dict[str, Position]:
    """Positions by slug for the channels of this stream; empty when ``raw`` is empty.

    ``name`` is what the client called the position (``after`` in a query), for the errors.
    """
    if raw is None or raw == "":
        return {}
    if len(raw) > max_length:
        raise InvalidInput(f"{name} is longer than {max_length} characters.")
    wanted = list(slugs)
    single = _SINGLE.fullmatch(raw)
    if single is not None:
        if len(wanted) != 1:
            raise InvalidInput(
                f"{name} must name each channel (slug:id,slug:id) on a stream of several channels."
            )
        number, epoch = single.groups()
        return {wanted[0]: Position(_to_sequence(number, name), epoch)}
    positions: dict[str, Position] = {}
    for part in raw.split(","):
        match = _PAIR.fullmatch(part)
        if match is None:
            raise InvalidInput(
                f"{name} must be an event id this server sent: "
                f"a number, or slug:number pairs joined by commas (not {raw[:40]!r})."
            )
        slug, number, epoch = match.groups()
        if slug in positions:
            raise InvalidInput(f"{name} names the channel {slug!r} twice.")
        positions[slug] = Position(_to_sequence(number, name), epoch)
    # Channels the stream does not carry are ignored, so a saved id keeps
    # working when a page subscribes to fewer channels than before.
    return {slug: position for slug, position in positions.items() if slug in wanted}


def format_position(sequence: int, epoch: str) -> str:
    """One channel's position, as a single-channel stream's id (a bare number without an epoch)."""
    return f"{sequence}{EPOCH_SEPARATOR}{epoch}" if epoch else str(sequence)


def id_suffix(epoch: str) -> bytes:
    """What follows the sequence number on a single-channel ``id:`` line, with its line end."""
    return (EPOCH_SEPARATOR + epoch + "\n").encode() if epoch else b"\n"


def format_cursor(positions: Mapping[str, int], order: Iterable[str], epochs: Mapping[str, str]) -> str:
    """The id for a stream whose channels (in ``order``) stand at ``positions``."""
    slugs = list(order)
    if len(slugs) == 1:
        return format_position(positions[slugs[0]], epochs[slugs[0]])
    return ",".join(f"{slug}:{format_position(positions[slug], epochs[slug])}" for slug in slugs)
