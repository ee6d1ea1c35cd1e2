"""manage.py republish: an upstream Pushsite's stream-control events are not messages."""

from __future__ import annotations

import logging

import pytest

from events.clients.republish import Republisher
from events.models import Message
from events.provisioning import upsert_channel
from events.wire.sse import ServerSentEvent

OPEN = ServerSentEvent('{"event":"pushsite.open","channels":["scores"]}', "pushsite.open", "24", has_id=True)
CLOSE = ServerSentEvent('{"event":"pushsite.close","reason":"server shutting down"}', "pushsite.close", "24")


@pytest.mark.django_db
@pytest.mark.parametrize("override", [None, "score"])
def test_open_and_close_markers_are_neither_relayed_nor_warned_about(
    caplog: pytest.LogCaptureFixture, override: str | None
) -> None:
    upsert_channel("mirror")
    republisher = Republisher("mirror", name="upstream.example/events/scores/", event=override)
    with caplog.at_level(logging.INFO, logger="events.clients.republish"):
        republisher.on_event(OPEN)
        republisher.on_event(CLOSE)
        republisher.on_event(ServerSentEvent('{"home": 1}', "score", "25", has_id=True))
    assert list(Message.objects.filter(channel__slug="mirror").values_list("event", "data")) == [
        ("score", {"home": 1})
    ]
    assert republisher.published == 1
    assert [r for r in caplog.records if r.name == "events.clients.republish"] == []
