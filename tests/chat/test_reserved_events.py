"""The chat app reserves ``chat.*`` event types for its room endpoints; the core keeps the registry."""

from __future__ import annotations

import pytest

from events.chat.rules import EVENT_PREFIX
from events.exceptions import InvalidInput
from events.models import Channel, Kind, Message
from events.provisioning import upsert_channel
from events.publish.store import publish
from events.publish.validate import publishing_reserved, reserve_event_prefix, validate_event_type

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("event", ["chat.message", "chat.deleted", "chat.typing"])
def test_publish_refuses_chat_events(event: str) -> None:
    room = upsert_channel("reserved-room", kind=Kind.CHAT)[0]
    with pytest.raises(InvalidInput) as error:
        publish(room, {"text": "forged", "author": {"name": "alice", "guest": False}}, event=event)
    assert error.value.detail == (
        f"event {event!r} is reserved: types starting with 'chat.' are published only by "
        "a chat room's own endpoints (POST /rooms/<slug>/messages)."
    )
    assert not Message.objects.filter(channel=room).exists()


def test_the_room_endpoints_scope_publishes_chat_events_and_nothing_else() -> None:
    room: Channel = upsert_channel("reserved-room", kind=Kind.CHAT)[0]
    with publishing_reserved(EVENT_PREFIX):
        publish(room, {"text": "hi", "author": {"name": "alice", "guest": False}}, event="chat.message")
        with pytest.raises(InvalidInput, match=r"'pushsite\.' are reserved"):
            validate_event_type("pushsite.reset")
    with pytest.raises(InvalidInput, match="reserved"):
        validate_event_type("chat.message")  # the scope ended
    assert list(Message.objects.filter(channel=room).values_list("event", flat=True)) == ["chat.message"]


def test_features_may_not_take_the_platform_prefix() -> None:
    with pytest.raises(ValueError):
        reserve_event_prefix("pushsite.x", "nobody")
    with pytest.raises(ValueError), publishing_reserved("unknown."):
        pass
