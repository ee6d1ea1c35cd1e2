"""Presence rows: one entry per person, refresh, expiry of a dead process's rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from events.chat import presence
from events.chat.models import ChatPresence
from events.chat.rules import Author
from events.models import Kind
from events.provisioning import upsert_channel

pytestmark = pytest.mark.django_db(transaction=True)

ANN = Author(label="user:ann", name="ann", guest=False)
GUEST_ANN = Author(label="guest:ann", name="ann", guest=True)


def test_a_person_counts_once_however_many_connections() -> None:
    room = upsert_channel("room", kind=Kind.CHAT)[0]
    for connection in ("c1", "c2"):
        presence._insert(connection, room.pk, ANN)
    presence._insert("c3", room.pk, GUEST_ANN)
    assert presence.snapshot(room.pk) == {
        "people": [{"name": "ann", "guest": False}, {"name": "ann", "guest": True}],
        "count": 2,
    }


@override_settings(PUSHSITE={"PRESENCE_REFRESH_SECONDS": 1})
def test_refresh_keeps_live_rows_expires_dead_ones_and_restores_lost_ones() -> None:
    room = upsert_channel("room", kind=Kind.CHAT)[0]
    presence._insert("mine", room.pk, ANN)
    presence._insert("dead", room.pk, GUEST_ANN)
    old = timezone.now() - timedelta(seconds=10)
    ChatPresence.objects.update(last_seen=old)

    assert presence._refresh({"mine": (room.pk, ANN)}, [room.pk]) == [room.pk]
    assert list(ChatPresence.objects.values_list("connection", flat=True)) == ["mine"]
    assert ChatPresence.objects.get().last_seen > old

    assert presence._refresh({"mine": (room.pk, ANN)}, [room.pk]) == []
    ChatPresence.objects.all().delete()  # as if another process took this one for dead
    assert presence._refresh({"mine": (room.pk, ANN)}, [room.pk]) == [room.pk]
    assert presence.snapshot(room.pk)["people"] == [{"name": "ann", "guest": False}]
