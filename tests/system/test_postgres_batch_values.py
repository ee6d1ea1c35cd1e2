"""What a batch stores on PostgreSQL is what each publisher sent, value for value.

A group-commit batch goes to PostgreSQL as one JSON text of its rows
(``json_to_recordset``, events/publish/store.py), into ``json`` columns that keep the
text (events.models.PublishedJSONField): ``jsonb`` re-ordered keys and rewrote numbers. Publishes sent together, so that
they share batches, each come back from the history exactly as sent: nulls, text
that JSON escapes, numbers past 64 bits, nesting; a top-level ``null`` is SQL NULL
as Django stores it, and every row carries its publisher and time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServerProcess, Site
from tests.support.services import PostgresDatabase
from tests.support.sse_client import Subscriber

pytestmark = pytest.mark.system

SLUG = "pg-batch-values"

VALUES: list[object] = [
    None,
    "",
    'quote " backslash \\ slash / tab \t newline \n',
    "\\u0000 is text here, not a NUL",
    "line\u2028separator \u00e9 \u4e2d \U0001f600",
    10**30,
    -(2**63),
    0.1,
    1e-300,
    True,
    [],
    {},
    {"nested": {"list": [1, "two", None, {"three": 3.5}]}, "z": 1, "a": 2},
    [None, [None]],
    # jsonb kept none of these as sent: keys shortest first, 1e300 as a 301-digit
    # integer, -0.0 as 0.
    {"bbb": 1, "a": 2, "cc": 3},
    1e300,
    -0.0,
    [{"y": -0.0, "x": 1.5e-310}],
]


@pytest.fixture(scope="module")
def pg(
    tmp_path_factory: pytest.TempPathFactory, prepared_database: PostgresDatabase
) -> Iterator[tuple[Site, ServerProcess, str]]:
    workdir: Path = tmp_path_factory.mktemp("pg-batch")
    site = Site(
        workdir=workdir, database_url=prepared_database.url, settings={"PUBLISH_RATE_MESSAGES": "100000"}
    )
    key = (
        site.shell(
            "from events.provisioning import create_api_key, upsert_channel\n"
            f"upsert_channel({SLUG!r})\n"
            "print(create_api_key('pg-batch', all_channels=True)[1])\n"
        )
        .strip()
        .splitlines()[-1]
    )
    server = ServerProcess(site, name="pg-batch").start()
    try:
        yield site, server, key
    finally:
        server.stop()


def test_values_published_together_come_back_as_sent(pg: tuple[Site, ServerProcess, str]) -> None:
    site, server, key = pg
    sent = [(f"case-{index}-{round_}", value) for round_ in range(4) for index, value in enumerate(VALUES)]

    def publish(item: tuple[str, object]) -> tuple[str, int]:
        event, value = item
        response = httpx.post(
            f"{server.url}/api/channels/{SLUG}/messages",
            content=json.dumps({"event": event, "data": value}),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert response.json()["data"] == value
        return event, int(response.json()["id"])

    # Sixteen at a time: the group commit stores what is queued together.
    with ThreadPoolExecutor(16) as pool:
        ids = dict(pool.map(publish, sent))

    response = httpx.get(f"{server.url}/api/channels/{SLUG}/messages?limit=1000", timeout=10)
    assert response.status_code == 200, response.text
    stored = {message["event"]: message for message in response.json()["messages"]}
    for event, value in sent:
        message = stored[event]
        assert message["data"] == value, event
        assert type(message["data"]) is type(value), event
        # The same text: key order, float spelling and the sign of zero included.
        assert json.dumps(message["data"]) == json.dumps(value), event
        assert int(message["id"]) == ids[event]
    assert sorted(int(m["id"]) for m in stored.values()) == sorted(ids.values())

    rows = json.loads(
        site.shell(
            "import json\n"
            "from events.models import Message\n"
            f"rows = Message.objects.filter(channel__slug={SLUG!r})\n"
            "print(json.dumps({'sql_null': rows.filter(data__isnull=True).count(),"
            " 'publishers': sorted(set(rows.values_list('publisher', flat=True))),"
            " 'undated': rows.filter(created_at__isnull=True).count(),"
            " 'counted': sorted(set(rows.values_list('delivered_live', 'delivered_replay')))}))\n"
        )
        .strip()
        .splitlines()[-1]
    )
    assert rows["sql_null"] == 4  # the four top-level nulls, as Django stores None
    assert len(rows["publishers"]) == 1
    assert rows["publishers"][0].startswith("key:pg-batch (")
    assert rows["undated"] == 0
    assert rows["counted"] == [[0, 0]]


SAME_AS_SENT = {"bbb": 1, "a": [-0.0, 1e300, {"zz": None, "y": 2}], "cc": "x"}


async def test_live_replayed_and_stored_any_way_the_data_line_is_the_same(
    pg: tuple[Site, ServerProcess, str],
) -> None:
    """Every way in: one API publish, a streamed publish's part, the ORM (a management command); every way out."""
    site, server, key = pg
    slug = "pg-same-text"
    site.create_channel(slug)
    auth = {"authorization": f"Bearer {key}"}
    url = f"{server.url}/events/{slug}/"
    async with Subscriber(url) as live:
        await live.opened()
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as client:
            answer = await client.post(f"/api/channels/{slug}/messages", json={"data": SAME_AS_SENT})
            assert answer.status_code == 201, answer.text
            part = json.dumps({"event": "part", "data": SAME_AS_SENT}).encode() + b"\n"
            streamed = await client.post(
                f"/api/channels/{slug}/stream", content=part, headers={"content-type": "application/x-ndjson"}
            )
            assert streamed.status_code in (200, 201), streamed.text
        site.manage("publish", slug, json.dumps(SAME_AS_SENT))
        # The API's message, the stream's part and its end event, the command's message.
        live_events = await live.events(4)
    assert [event.event for event in live_events] == ["message", "part", "pushsite.stream.end", "message"]
    async with Subscriber(url, headers={"Last-Event-ID": "0"}) as replay:
        replayed = await replay.events(len(live_events))
    for live_event, replayed_event in zip(live_events, replayed, strict=True):
        # Byte for byte: the frame a reconnecting browser gets is the one it missed.
        assert (replayed_event.id, replayed_event.data) == (live_event.id, live_event.data)
    # A streamed part's data carries the stream and the part's number around what was sent.
    payloads = [json.loads(live_events[0].data)["data"], json.loads(live_events[1].data)["data"]["data"]]
    payloads.append(json.loads(live_events[3].data)["data"])
    # The same text: key order, float spelling and the sign of zero included.
    assert [json.dumps(data) for data in payloads] == [json.dumps(SAME_AS_SENT)] * 3
    history = httpx.get(f"{server.url}/api/channels/{slug}/messages", timeout=10).json()["messages"]
    stored = [history[0]["data"], history[1]["data"]["data"], history[3]["data"]]
    assert [json.dumps(data) for data in stored] == [json.dumps(SAME_AS_SENT)] * 3
