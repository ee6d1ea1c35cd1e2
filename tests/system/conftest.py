"""Two server processes sharing a real Redis and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess, Site
from tests.support.services import PostgresDatabase, RedisServer, postgres_admin_url, redis_binary

pytestmark = pytest.mark.system

CLUSTER_SETTINGS = {
    "HEARTBEAT_SECONDS": "1",
    "RELAY_POLL_SECONDS": "0.5",
    "FEED_LINGER_SECONDS": "0.5",
    # Load tests publish thousands of messages with one key.
    "PUBLISH_RATE_MESSAGES": "100000",
}


@dataclass
class Cluster:
    site: Site
    redis: RedisServer
    a: ServerProcess
    b: ServerProcess
    key: str

    def stop(self) -> None:
        for server in (self.a, self.b):
            server.kill()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(postgres_admin_url())
    database.create()
    yield database
    database.drop()


@pytest.fixture(scope="session")
def prepared_database(
    postgres_database: PostgresDatabase, tmp_path_factory: pytest.TempPathFactory
) -> PostgresDatabase:
    site = Site(workdir=tmp_path_factory.mktemp("pg-site"), database_url=postgres_database.url)
    site.prepare()
    return postgres_database


def start_cluster(
    workdir: Path,
    database: PostgresDatabase,
    *,
    pushsite: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> Cluster:
    redis = RedisServer(redis_binary(), workdir)
    redis.start()
    site = Site(
        workdir=workdir,
        database_url=database.url,
        redis_url=redis.url,
        settings={**CLUSTER_SETTINGS, **(pushsite or {})},
        extra_env=env or {},
    )
    site.prepare()
    key = site.create_api_key("system")
    a = ServerProcess(site, name="A").start()
    b = ServerProcess(site, name="B").start()
    return Cluster(site=site, redis=redis, a=a, b=b, key=key)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, prepared_database: PostgresDatabase
) -> Iterator[Cluster]:
    """Shared by the tests that leave Redis and both processes running."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"), prepared_database)
    yield running
    running.stop()
    running.redis.stop()


@pytest.fixture
def own_cluster(tmp_path: Path, prepared_database: PostgresDatabase) -> Iterator[Cluster]:
    """For tests that restart Redis or kill a process."""
    running = start_cluster(tmp_path, prepared_database)
    yield running
    running.stop()
    running.redis.stop()
