"""Real Redis and PostgreSQL for the system tests, or a clear reason why not.

scripts/test.sh finds, starts or installs both and exports where they are
(PUSHSITE_TEST_REDIS_SERVER, PUSHSITE_TEST_POSTGRES_URL). Run directly, the
tests look on PATH and at 127.0.0.1:5432. When a service cannot be had, the
tests that need it are skipped with the reason, except under CI=true, where
they fail: a CI run must never pass without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg

from tests.support.servers import free_port

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test whose service is missing."""
    # Imported here: the benchmark (bench/servers.py) uses this module in an
    # environment without pytest.
    import pytest

    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI requires it, but {reason}")
    pytest.skip(reason)


class RedisServer:
    """A redis-server this test controls: it can be stopped and started again."""

    def __init__(self, binary: str, workdir: Path, *, prefix: Sequence[str] = ()) -> None:
        self.binary = binary
        # Run it under another command (the benchmark pins it to a CPU with taskset).
        self.prefix = list(prefix)
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)  # a process start has no event to await
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def redis_binary() -> str:
    binary = os.environ.get("PUSHSITE_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        unavailable("redis-server is not installed (scripts/test.sh installs it with apt-get as root)")
    assert binary is not None
    return binary


def postgres_admin_url() -> str:
    url = os.environ.get("PUSHSITE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL does not answer at {url.split('@')[-1]}: {exc}")
    return url


class PostgresDatabase:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"pushsite_sys_{uuid.uuid4().hex[:10]}"
        base, _, _ = admin_url.rpartition("/")
        self.url = f"{base}/{self.name}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(sql)

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def allow_connections(self, allowed: bool) -> None:
        """Take the database away from (or give it back to) every client, like an outage."""
        self._admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            self._admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
            )

    def connection_count(self) -> int:
        with psycopg.connect(self.admin_url) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchone()
        assert row is not None
        return int(row[0])
