"""The census flush: one statement per batch of messages, in a thread of its own, bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from events import metrics
from events.models import Channel
from events.ops import census
from events.ops.models import ServerCensus
from events.provisioning import upsert_channel
from events.publish.store import store_message
from tests.support.servers import Site
from tests.support.services import PostgresDatabase, postgres_admin_url

# The same flush through a real PostgreSQL (and the SQLite of the in-process tests).
FLUSH = """
from events import metrics
from events.models import Message
from events.ops import census
from events.provisioning import upsert_channel
from events.publish.store import store_message
channel, _ = upsert_channel('counted')
messages = [store_message(channel, n) for n in range(3)]
for message in messages:
    metrics.live_deliveries[(channel.pk, message.sequence)] += message.sequence
metrics.replayed_deliveries[(channel.pk, messages[0].sequence)] += 7
census.report(5, {'counted': 5})
print(json.dumps(list(Message.objects.filter(channel=channel).order_by('sequence')
      .values_list('sequence', 'delivered_live', 'delivered_replay'))))
"""


def stored(channel: Channel, count: int) -> list[int]:
    return [store_message(channel, n).sequence for n in range(count)]


@pytest.mark.django_db(transaction=True)
def test_a_flush_adds_every_count_in_one_statement() -> None:
    channel, _ = upsert_channel("counted")
    sequences = stored(channel, 5)
    for sequence in sequences:
        metrics.live_deliveries[(channel.pk, sequence)] += 10 * sequence
    metrics.replayed_deliveries[(channel.pk, sequences[0])] += 3

    with CaptureQueriesContext(connection) as queries:
        census.add_delivery_counts(*metrics.take_delivery_counts())

    assert len(queries) == 1
    rows = list(channel.messages.order_by("sequence").values_list("delivered_live", "delivered_replay"))
    assert rows == [(10, 3), (20, 0), (30, 0), (40, 0), (50, 0)]
    assert metrics.take_delivery_counts() == ({}, {})


@pytest.mark.django_db(transaction=True)
def test_a_flush_past_its_bound_keeps_the_newest_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(census, "MAX_MESSAGES_PER_FLUSH", 2)
    monkeypatch.setattr(census, "ROWS_PER_STATEMENT", 1)
    channel, _ = upsert_channel("counted")
    for sequence in stored(channel, 3):
        metrics.live_deliveries[(channel.pk, sequence)] += 1

    with CaptureQueriesContext(connection) as queries:
        census.add_delivery_counts(*metrics.take_delivery_counts())

    assert len(queries) == 2
    assert list(channel.messages.order_by("sequence").values_list("delivered_live", flat=True)) == [0, 1, 1]


@pytest.mark.django_db(transaction=True)
def test_report_writes_the_process_row() -> None:
    census.report(4, {"news": 4})
    row = ServerCensus.objects.get(process=census.PROCESS)
    assert (row.connections, row.channels) == (4, {"news": 4})


@pytest.mark.system
def test_the_flush_statement_runs_on_postgresql(tmp_path: Path) -> None:
    database = PostgresDatabase(postgres_admin_url())
    database.create()
    try:
        site = Site(workdir=tmp_path, database_url=database.url)
        site.prepare()
        output = site.shell("import json\n" + FLUSH)
    finally:
        database.drop()
    assert json.loads(output.strip().splitlines()[-1]) == [[1, 1, 7], [2, 2, 0], [3, 3, 0]]
