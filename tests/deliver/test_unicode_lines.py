"""On a real server: no Unicode line break ever reaches a client raw, and every block a client sees carries data."""

from __future__ import annotations

import json

import httpx

from tests.support import api
from tests.support.servers import ServerProcess
from tests.support.sse_client import Subscriber

SEPARATORS = "a\u2028b\u2029c\x85d"


async def test_a_client_splitting_on_every_unicode_line_break_reads_one_line_per_field(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    async with Subscriber(f"{server.url}/events/{channel}/") as subscriber:
        await subscriber.opened()
        await api.publish(server.url, api_key, channel, {SEPARATORS: SEPARATORS}, "message")
        event = await subscriber.next_event()
    assert json.loads(event.data)["data"] == {SEPARATORS: SEPARATORS}
    text = bytes(subscriber.raw).decode()
    for separator in ("\u2028", "\u2029", "\x85"):
        assert separator not in text
    # What a lenient line-splitting client sees: every block has a data line.
    blocks = [block for block in text.split("\n\n") if block and not block.startswith(":")]
    assert len(blocks) == 2
    for block in blocks:
        assert block.splitlines() == block.split("\n")
        assert any(line.startswith("data: ") for line in block.splitlines())


def test_the_ndjson_format_is_one_line_per_event_for_str_splitlines(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    with httpx.stream(
        "GET", f"{server.url}/events/{channel}/?format=ndjson", timeout=httpx.Timeout(10, read=10)
    ) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["event"] == "pushsite.open"
        httpx.post(
            f"{server.url}/api/channels/{channel}/messages",
            json={"data": SEPARATORS},
            headers={"Authorization": f"Bearer {api_key}"},
        ).raise_for_status()
        line = next(lines)
    assert line.splitlines() == [line]
    assert json.loads(line)["data"] == SEPARATORS
