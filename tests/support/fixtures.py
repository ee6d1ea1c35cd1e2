"""Fixtures for in-process tests of the endpoint families: a channel, a chat room, a key, a person.

tests/conftest.py makes them available to every test; a module that needs other
ones (another slug, a scoped key) defines its own under the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from events.access import ratelimit
from events.models import Channel, Kind, Message
from events.provisioning import create_api_key, upsert_channel


@pytest.fixture
def empty_cache() -> Iterator[None]:
    """Rate-limit counters start at zero (``pytest.mark.usefixtures("empty_cache")``)."""
    cache.clear()
    ratelimit.forget_reservations()
    yield
    cache.clear()
    ratelimit.forget_reservations()


@pytest.fixture
def news() -> Channel:
    return upsert_channel("news")[0]


@pytest.fixture
def room() -> Channel:
    return upsert_channel("room", kind=Kind.CHAT)[0]


@pytest.fixture
def key(news: Channel) -> str:
    """A key that may publish on every channel."""
    return create_api_key("publisher", all_channels=True)[1]


@pytest.fixture
def alice(room: Channel) -> User:
    return User.objects.create_user("alice", password="pw")


async def messages() -> list[tuple[str, Any]]:
    """Every stored message's event type and data, oldest first."""
    return [row async for row in Message.objects.order_by("pk").values_list("event", "data")]
