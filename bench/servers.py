"""The servers under test, each started pinned to one CPU with ``taskset``.

* ``pushsite``: as deployed, ``manage.py serve`` (uvicorn + uvloop + httptools),
  production settings, SQLite, in-memory channel layer (or Redis for the
  cross-process scenario). Prepared with tests/support/servers.py's ``Site``.
* ``pushsite-daphne``: the same application under daphne (a design-choice variant).
* ``reference``: bench/refserver.py, the raw-asyncio limit.
* ``uvicorn-floor``: bench/asgi_floor.py, the cheapest ASGI app under Pushsite's
  server configuration (what uvicorn itself costs).
* ``eventstream``: django-eventstream in its README's setup, under daphne
  (needs bench/.venv).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ROOT, Site, free_port
from tests.support.services import RedisServer

SERVER_CPU = 0
START_TIMEOUT = 60.0
SECRET = "benchmark-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
SLUG = "bench"


def eventstream_available() -> bool:
    return importlib.util.find_spec("django_eventstream") is not None


@functools.cache
def realtime_prefix() -> tuple[str, ...]:
    """``chrt -f 10`` if this user may use it, else nothing.

    The publisher shares CPU 1 with the subscribers; at normal priority the
    kernel lets a busy subscriber process finish its slice (milliseconds) before
    the woken publisher runs, which would pace every server by the client.
    """
    chrt = shutil.which("chrt")
    if chrt is None:
        return ()
    probe = subprocess.run([chrt, "-f", "10", "true"], capture_output=True, check=False)
    return (chrt, "-f", "10") if probe.returncode == 0 else ()


def pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def wait_for_http(port: int, path: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``GET path`` until it answers 200 (raw socket: no client library needed)."""
    deadline = time.monotonic() + START_TIMEOUT
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited at start (see {log}):\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)  # a process start has no event to wait on
    raise RuntimeError(f"server on port {port} not ready within {START_TIMEOUT}s (see {log})")


@dataclass
class Server:
    """One running server process."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int
    api_key: str = ""
    health_path: str = "/healthz"
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    cwd: Path = ROOT

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_http(self.port, self.health_path, self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PushsiteDeployment:
    """One SQLite database with the benchmark channel and key, shared by Pushsite servers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.site = Site(workdir=workdir, database_url=f"sqlite:///{workdir / 'db.sqlite3'}")
        self.api_key = ""

    def prepare(self) -> None:
        self.site.prepare()
        self.site.create_channel(SLUG)
        self.api_key = self.site.create_api_key("bench")

    def copy_to(self, workdir: Path) -> PushsiteDeployment:
        """This prepared site in ``workdir``: a fresh copy of its database, for one round of several."""
        shutil.copytree(self.workdir, workdir, dirs_exist_ok=True)
        copy = PushsiteDeployment(workdir)
        copy.api_key = self.api_key
        return copy

    def env(self, redis_url: str = "") -> dict[str, str]:
        site = Site(workdir=self.workdir, database_url=self.site.database_url, redis_url=redis_url)
        env = site.env()
        env["DJANGO_SECRET_KEY"] = SECRET
        # Per-stream INFO lines ("Stream opened") would cost CPU at 10,000 streams.
        env["DJANGO_LOG_LEVEL"] = "WARNING"
        # Every load-generator connection and publish comes from one address and
        # one key: lift the per-address stream cap and the per-key publish rate,
        # which a real deployment keeps (they are tested in tests/access/test_limits.py).
        env["PUSHSITE_MAX_STREAMS_PER_IP"] = "1000000"
        env["PUSHSITE_PUBLISH_RATE_MESSAGES"] = "1000000"
        return env

    def server(
        self,
        name: str,
        *,
        asgi: str = "uvicorn",
        redis_url: str = "",
        cpu: int | None,
        root: Path = ROOT,
        settings_module: str = "",
    ) -> Server:
        """A Pushsite process; ``root``: another checkout's code (same database), for A/B runs."""
        port = free_port()
        if asgi == "uvicorn":
            command = [sys.executable, str(root / "manage.py"), "serve", "--port", str(port)]
        else:
            command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            command.append("pushsite.asgi:application")
        env = self.env(redis_url)
        if settings_module:
            env["DJANGO_SETTINGS_MODULE"] = settings_module
        return Server(
            name=name,
            command=pinned(command, cpu),
            env=env,
            log=self.workdir / f"{name}-{port}.log",
            port=port,
            api_key=self.api_key,
            cwd=root,
        )


def reference_server(workdir: Path, cpu: int | None) -> Server:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return Server(
        name="reference",
        command=pinned([sys.executable, "-m", "bench.refserver", "--port", str(port)], cpu),
        env=env,
        log=workdir / f"reference-{port}.log",
        port=port,
    )


def asgi_floor_server(workdir: Path, cpu: int | None) -> Server:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return Server(
        name="uvicorn-floor",
        command=pinned([sys.executable, "-m", "bench.asgi_floor", "--port", str(port)], cpu),
        env=env,
        log=workdir / f"uvicorn-floor-{port}.log",
        port=port,
    )


def eventstream_server(workdir: Path, cpu: int | None) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PUSHSITE_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "bench.eventstream_site.settings",
            "EVENTSTREAM_DB": str(workdir / "eventstream.sqlite3"),
        }
    )
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append("bench.eventstream_site.asgi:application")
    return Server(
        name="eventstream",
        command=pinned(command, cpu),
        env=env,
        log=workdir / f"eventstream-{port}.log",
        port=port,
    )


def redis_server(workdir: Path, cpu: int | None) -> RedisServer:
    """A private redis-server on a free loopback port, without persistence, pinned to ``cpu``."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    return RedisServer(binary, workdir, prefix=pinned([], cpu))
