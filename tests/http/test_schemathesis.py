"""schemathesis runs the served OpenAPI description against a live server on SQLite (issue 13).

The PostgreSQL run is tests/system/test_fuzz_postgres.py; the cases are tests/support/fuzz.py's.
"""

from __future__ import annotations

import pytest

from tests.support import fuzz
from tests.support.servers import ServerProcess, Site


@pytest.mark.timeout(600)  # about 1,000 cases per endpoint family: a minute or two
def test_the_description_holds_against_a_live_server_on_sqlite(site: Site, server: ServerProcess) -> None:
    key = fuzz.fuzz_channels(site)
    done = fuzz.run(server, key)
    print("\nschemathesis cases on SQLite:", dict(done))
    assert set(done) == set(fuzz.CASES)
