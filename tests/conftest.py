"""Fixtures shared by the suite: a real server process with a pool of channels."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from channels.layers import channel_layers

from tests.support.fixtures import alice, empty_cache, key, news, room  # noqa: F401  (shared fixtures)
from tests.support.servers import ServerProcess, Site

# pool-0 .. pool-59 are for tests that name their channel; the `channel` fixture
# hands out the rest, one per test.
RESERVED_POOL = 60
POOL_SIZE = 240
SERVER_SETTINGS = {
    "HEARTBEAT_SECONDS": "1",
    "FEED_LINGER_SECONDS": "0.5",
    "RELAY_POLL_SECONDS": "0.5",
    "PRUNE_EVERY": "1",
    "REVOCATION_SECONDS": "1",
    # Many tests publish with the session's one key (tests/access/test_limits.py tests the limit).
    "PUBLISH_RATE_MESSAGES": "100000",
    "STREAM_IDLE_SECONDS": "2",
    # Every browser test posts from 127.0.0.1: only the per-person limit applies.
    "CHAT_IP_RATE_MESSAGES": "100000",
    "CHAT_NICKNAME_CLAIMS": "100000",
    "PRESENCE_REFRESH_SECONDS": "1",
}


@pytest.fixture(autouse=True)
def _flush_channel_layers() -> Iterator[None]:
    """In-process tests must not see each other's channel-layer messages."""
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    workdir: Path = tmp_path_factory.mktemp("site")
    site = Site(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'db.sqlite3'}",
        settings=dict(SERVER_SETTINGS),
    )
    site.prepare()
    site.shell(
        "from events.provisioning import upsert_channel\n"
        f"for n in range({POOL_SIZE}): upsert_channel(f'pool-{{n}}')\n"
        "upsert_channel('private-room', visibility='private')\n"
        "upsert_channel('members', visibility='authenticated')\n"
        "upsert_channel('partner-feed', allowed_origins=['http://partner.example:8080'])\n"
        "from events.models import Channel\n"
        "Channel.objects.filter(slug='short-history').delete()\n"
        "c, _ = upsert_channel('short-history'); c.retention_count = 3; c.save()\n"
        "c, _ = upsert_channel('switched-off'); c.is_active = False; c.save()\n"
    )
    return site


@pytest.fixture(scope="session")
def api_key(site: Site) -> str:
    return site.create_api_key("tests")


@pytest.fixture(scope="session")
def server(site: Site) -> Iterator[ServerProcess]:
    """``manage.py serve`` as deployed: streams write directly to the connection (pushsite/protocol.py)."""
    process = ServerProcess(site, name="server").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def portable_server(site: Site) -> Iterator[ServerProcess]:
    """``manage.py serve --portable``: streams write through plain ASGI send, as under any other server."""
    process = ServerProcess(site, name="portable", args=("--portable",)).start()
    yield process
    process.stop()


_pool = itertools.count(RESERVED_POOL)


@pytest.fixture
def channel(site: Site) -> str:
    """A public channel no other test publishes to."""
    number = next(_pool)
    assert number < POOL_SIZE, "raise POOL_SIZE in tests/conftest.py"
    return f"pool-{number}"
