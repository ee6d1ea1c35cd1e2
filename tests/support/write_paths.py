"""Run a module's stream tests on both write paths: direct to the connection, and plain ASGI send."""

from __future__ import annotations

import pytest

from tests.support.servers import ServerProcess

# Server fixtures (tests/conftest.py) by write path.
WRITE_PATHS = {"direct": "server", "asgi-send": "portable_server"}


@pytest.fixture(name="server", params=list(WRITE_PATHS))
def server_on_each_write_path(request: pytest.FixtureRequest) -> ServerProcess:
    """Each test once per write path (the direct one is the session's ``server``)."""
    process: ServerProcess = request.getfixturevalue(WRITE_PATHS[request.param])
    return process


def write_path(request: pytest.FixtureRequest) -> str:
    """The write path the running test got (a key of ``WRITE_PATHS``)."""
    path: str = request.node.callspec.params["server"]
    return path
