"""Real Pushsite server processes on loopback ports, for tests and benchmarks."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


_static_root: Path | None = None


def collected_static_root() -> Path:
    """Static files collected once per process for every ``DJANGO_DEBUG=0`` site (events.E004 needs the manifest)."""
    global _static_root
    if _static_root is None:
        root = Path(tempfile.mkdtemp(prefix="pushsite-static-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        env = {
            **_server_env(),
            "DJANGO_STATIC_ROOT": str(root),
            "DATABASE_URL": f"sqlite:///{root / 'unused.sqlite3'}",
        }
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        _static_root = root
    return _static_root


def _server_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PUSHSITE_", "DJANGO_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "pushsite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_ENV_FILE": "",  # never a developer's .env (scripts/demo.sh)
            "DJANGO_SECRET_KEY": "system-test-secret-key-0123456789-abcdefghijklmnop",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    """One deployment's configuration: a database, a channel layer, settings."""

    workdir: Path
    database_url: str
    redis_url: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    # Other environment variables (e.g. REDIS_LAYER) for the processes.
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = _server_env()
        env["DJANGO_STATIC_ROOT"] = str(collected_static_root())
        env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update({f"PUSHSITE_{key}": value for key, value in self.settings.items()})
        env.update(self.extra_env)
        return env

    def manage(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        """Run a management command against this site; its stdout."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--noinput", "-v0")

    def create_channel(self, slug: str, *args: str) -> None:
        self.manage("create_channel", slug, *args)

    def create_api_key(self, name: str, *channels: str) -> str:
        args = [arg for slug in channels for arg in ("--channel", slug)]
        return self.manage("create_api_key", name, *args).strip().splitlines()[-1]

    def create_channels(self, *slugs: str) -> None:
        """Several public channels in one process start (create_channel runs one each)."""
        lines = "".join(f"upsert_channel({slug!r})\n" for slug in slugs)
        self.shell("from events.provisioning import upsert_channel\n" + lines)

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)


class ServerProcess:
    """``manage.py serve`` on a free loopback port, with its log kept for failures."""

    def __init__(
        self, site: Site, *, port: int | None = None, name: str = "server", args: tuple[str, ...] = ()
    ) -> None:
        self.site = site
        self.args = args
        self.port = port or free_port()
        self.name = name
        self.log_path = site.workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(self.port), *self.args],
            cwd=ROOT,
            env=self.site.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # a process start has no event to await
        raise AssertionError(f"{self.name} not ready within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^([a-z_]+)(?:\{[^}]*\})? ([-+0-9.eE]+|NaN)$", line)
            if match and match.group(1) not in values:
                values[match.group(1)] = float(match.group(2))
        return values

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"{self.name} ignored signal {sig} for {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
