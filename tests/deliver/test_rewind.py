"""``?rewind=N``: the last N stored messages first, then live, against a real server."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from events.deliver.consumer import parse_rewind
from events.exceptions import InvalidInput
from tests.support import api
from tests.support.servers import ServerProcess, Site
from tests.support.sse_client import Subscriber, ids, without_epochs

_names = itertools.count()


def new_channel(site: Site) -> str:
    slug = f"rewind-{next(_names)}"
    site.create_channel(slug)
    return slug


async def test_rewind_gives_the_last_n_then_live_without_a_repeat(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    sent = [await api.publish(server.url, api_key, channel, {"n": n}) for n in range(5)]
    async with Subscriber(f"{server.url}/events/{channel}/?rewind=3") as subscriber:
        assert ids(await subscriber.events(3)) == sent[2:]
        live = await api.publish(server.url, api_key, channel, {"n": 5})
        assert ids([await subscriber.next_event()]) == [live]


async def test_rewind_past_the_start_gives_everything_stored(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    slug = new_channel(site)
    sent = [await api.publish(server.url, api_key, slug, n) for n in range(2)]
    async with Subscriber(f"{server.url}/events/{slug}/?rewind=50") as subscriber:
        assert ids(await subscriber.events(2)) == sent
        live = await api.publish(server.url, api_key, slug, 2)
        assert ids([await subscriber.next_event()]) == [live]


async def test_rewind_on_an_empty_channel_just_goes_live(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    slug = new_channel(site)
    async with Subscriber(f"{server.url}/events/{slug}/?rewind=10") as subscriber:
        assert without_epochs((await subscriber.opened()).id) == "0"
        live = await api.publish(server.url, api_key, slug, "first")
        event = await subscriber.next_event()
        assert ids([event]) == [live]
        assert event.event == "message"


async def test_last_event_id_wins_over_rewind(server: ServerProcess, api_key: str, channel: str) -> None:
    sent = [await api.publish(server.url, api_key, channel, n) for n in range(4)]
    async with Subscriber(
        f"{server.url}/events/{channel}/?rewind=1", headers={"Last-Event-ID": str(sent[0])}
    ) as subscriber:
        assert ids(await subscriber.events(3)) == sent[1:]
    async with Subscriber(f"{server.url}/events/{channel}/?rewind=1&lastEventId={sent[2]}") as subscriber:
        assert ids([await subscriber.next_event()]) == [sent[3]]


async def test_rewind_is_per_channel_on_a_stream_of_several(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    first, second = new_channel(site), new_channel(site)
    a = [await api.publish(server.url, api_key, first, f"a{n}") for n in range(3)]
    b = [await api.publish(server.url, api_key, second, f"b{n}") for n in range(3)]
    url = f"{server.url}/events/?channel={first}&channel={second}&rewind=2"
    async with Subscriber(url) as subscriber:
        events = await subscriber.events(4)
        by_channel: dict[str, list[int]] = {}
        for event in events:
            envelope = json.loads(event.data)
            by_channel.setdefault(envelope["channel"], []).append(envelope["id"])
        assert by_channel == {first: a[1:], second: b[1:]}
        assert without_epochs(events[-1].id) == f"{first}:{a[2]},{second}:{b[2]}"


async def test_rewind_while_messages_are_being_published_has_no_gap_or_repeat(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    slug = new_channel(site)
    before = [await api.publish(server.url, api_key, slug, n) for n in range(20)]

    async def keep_publishing() -> list[int]:
        return [await api.publish(server.url, api_key, slug, 100 + n) for n in range(20)]

    publishing = asyncio.create_task(keep_publishing())
    async with Subscriber(f"{server.url}/events/{slug}/?rewind=5") as subscriber:
        during = await publishing
        expected_last = during[-1]
        received: list[int] = []
        async with asyncio.timeout(10):
            while not received or received[-1] < expected_last:
                received += ids([await subscriber.next_event()])
    # Contiguous from the fifth-newest at subscription time up to the last publish.
    assert received == list(range(received[0], expected_last + 1))
    assert before[-5] <= received[0]


def test_rewind_on_the_ndjson_stream(server: ServerProcess, api_key: str, channel: str) -> None:
    sent = [asyncio.run(api.publish(server.url, api_key, channel, {"n": n})) for n in range(3)]
    with httpx.stream(
        "GET", f"{server.url}/events/{channel}/", params={"format": "ndjson", "rewind": "2"}, timeout=10
    ) as response:
        assert response.status_code == 200
        lines = (json.loads(line) for line in response.iter_lines() if line)
        messages = [line for line in itertools.islice(lines, 3) if "id" in line]
    # The open line carries only a cursor; the two messages follow, in order.
    assert [line["id"] for line in messages] == sent[1:]


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "101", "\uff11", "9" * 30, " 3"])
async def test_bad_rewind_values_are_a_400_in_json(server: ServerProcess, channel: str, raw: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/events/{channel}/", params={"rewind": raw})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "invalid",
        "detail": f"rewind must be a whole number from 0 to 100, not {raw[:40]!r}.",
    }


def test_the_rewind_cap_is_a_setting(settings: object) -> None:
    settings.PUSHSITE = {"MAX_REWIND": 5}  # type: ignore[attr-defined]
    assert parse_rewind("5") == 5
    assert parse_rewind("") == 0
    assert parse_rewind(None) == 0
    with pytest.raises(InvalidInput, match="from 0 to 5"):
        parse_rewind("6")


async def test_the_open_event_names_titles_and_whether_history_follows(
    server: ServerProcess, api_key: str, site: Site
) -> None:
    slug = f"rewind-{next(_names)}"
    site.create_channel(slug, "--title", "Cup final")
    async with Subscriber(f"{server.url}/events/{slug}/?rewind=5") as subscriber:
        opened = json.loads((await subscriber.opened()).data)
    assert opened == {
        "event": "pushsite.open",
        "channels": [slug],
        "titles": {slug: "Cup final"},
        "history": False,
    }
    await api.publish(server.url, api_key, slug, "one")
    async with Subscriber(f"{server.url}/events/{slug}/?rewind=5") as subscriber:
        assert json.loads((await subscriber.opened()).data)["history"] is True
        assert ids([await subscriber.next_event()]) == [1]
