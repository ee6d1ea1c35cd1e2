"""What a batch stores on PostgreSQL is what each publisher sent, value for value.

A group-commit batch goes to PostgreSQL as one JSON text of its rows
(``jsonb_to_recordset``, events/publish/store.py). Publishes sent together, so that
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
