"""schemathesis runs the served OpenAPI description against a live server on PostgreSQL (issue 13).

PostgreSQL refuses what SQLite stores (``\\u0000`` in ``jsonb``, for one): bad input
must still be a 4xx there. The SQLite run is tests/http/test_schemathesis.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SERVER_SETTINGS
from tests.support import fuzz
from tests.support.servers import ServerProcess, Site
from tests.support.services import PostgresDatabase


@pytest.mark.system
@pytest.mark.timeout(600)  # about 1,000 cases per endpoint family: a minute or two
def test_the_description_holds_against_a_live_server_on_postgresql(
    tmp_path: Path, prepared_database: PostgresDatabase
) -> None:
    site = Site(workdir=tmp_path, database_url=prepared_database.url, settings=dict(SERVER_SETTINGS))
    key = fuzz.fuzz_channels(site)
    server = ServerProcess(site, name="fuzz-pg").start()
    try:
        done = fuzz.run(server, key)
    finally:
        server.stop()
    print("\nschemathesis cases on PostgreSQL:", dict(done))
    assert set(done) == set(fuzz.CASES)
