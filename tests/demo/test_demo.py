"""The streamed-answer demo page, on a real server: tokens arrive one by one, then the folded end."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.test import Client

from events.demo.management.commands import demo_ticker
from events.models import Message
from events.provisioning import upsert_channel
from tests.support.servers import ROOT, ServerProcess, Site, free_port
from tests.support.sse_client import Subscriber


@pytest.fixture(scope="module")
def answers(site: Site) -> str:
    site.shell(
        "from events.provisioning import upsert_channel\nupsert_channel('answers', stream_storage='fold')"
    )
    return "answers"


async def test_stream_publication_answer_arrives_token_by_token(server: ServerProcess, answers: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as browser:
        home = await browser.get("/")
        assert 'href="/demo/streamed/"' in home.text
        page = await browser.get("/demo/streamed/")
        assert page.status_code == 200
        assert 'data-stream="/events/answers/"' in page.text
        script = re.search(r'src="([^"]*streamed[^"]*\.js)"', page.text)
        assert script is not None
        assert (await browser.get(script.group(1))).status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        headers = {"X-CSRFToken": token.group(1)}

        async with Subscriber(f"{server.url}/events/{answers}/") as subscriber:
            await subscriber.wait_for_bytes(b"id: ")
            asked = await browser.post(
                "/demo/streamed/ask", data={"question": "What is <b>this</b>?"}, headers=headers
            )
            assert asked.status_code == 202, asked.text
            stream = asked.json()["stream"]
            busy = await browser.post("/demo/streamed/ask", data={"question": "again"}, headers=headers)
            assert busy.status_code == 409
            assert busy.json()["error"] == "busy"

            tokens: list[str] = []
            while True:
                event = await subscriber.next_event(timeout=10)
                payload = json.loads(event.data)["data"]
                if event.event == "pushsite.stream.end":
                    end = payload
                    break
                assert event.event == "token"
                assert payload["stream"] == stream
                assert payload["part"] == len(tokens) + 1
                tokens.append(payload["data"])

    assert len(tokens) > 20
    answer = "".join(tokens)
    assert answer.startswith("You asked: “What is <b>this</b>?”. Here is how")
    assert end["status"] == "done"
    assert end["parts"] == len(tokens)
    assert "".join(part["data"] for part in end["folded"]) == answer


async def test_asking_needs_the_csrf_token(server: ServerProcess, answers: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post("/demo/streamed/ask", data={"question": "x"})
    assert response.status_code == 403


def test_demo_ticker_stops_and_says_why_when_its_key_is_refused(server: ServerProcess, site: Site) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "demo_ticker",
            "--url",
            server.url,
            "--api-key",
            "psk_revoked",
            "--every",
            "0.1",
        ],
        cwd=ROOT,
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=60,  # before the fix: retried silently forever
    )
    assert result.returncode == 1
    assert "demo ticker: the server refused the API key (401 " in result.stderr
    assert "run scripts/demo.sh again" in result.stderr


class _Stop(Exception):
    pass


def _ticker_stderr_against_a_closed_port(monkeypatch: pytest.MonkeyPatch, tries: int) -> str:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= tries:
            raise _Stop

    # The ticker's own clock and sleep only (not the process's): it stops after `tries` posts.
    monkeypatch.setattr(demo_ticker, "time", SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    stderr = StringIO()
    with pytest.raises(_Stop):
        call_command(
            "demo_ticker", "--url", f"http://127.0.0.1:{free_port()}", "--api-key", "psk_x", stderr=stderr
        )
    return stderr.getvalue()


def test_demo_ticker_waits_quietly_for_the_server_demo_sh_starts_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # demo.sh starts the ticker, then the server: every demo began with
    # "demo ticker: [Errno 111] Connection refused (retrying)" in demo-ticker.log.
    assert _ticker_stderr_against_a_closed_port(monkeypatch, tries=3) == ""


def test_demo_ticker_complains_when_no_server_answers_past_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_ticker, "STARTUP_GRACE_SECONDS", 0.0)
    assert "(retrying)" in _ticker_stderr_against_a_closed_port(monkeypatch, tries=2)


def test_bootstrap_names_the_virtual_environment_it_creates(tmp_path: Path) -> None:
    # bench/run.sh builds bench/.venv, and said "Creating the virtual environment in .venv".
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts" / "bootstrap.sh")
    (tmp_path / "requirements.txt").write_text("")
    # A stand-in for python3.11 -m venv: a "python" that accepts every call.
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\n[ "$2" = venv ] || exit 0\nmkdir -p "$3/bin" && cp "$0" "$3/bin/python"\n')
    fake.chmod(0o755)
    script = (
        f'source "{tmp_path}/scripts/bootstrap.sh"; find_python() {{ echo "{fake}"; }}; '
        'VENV="$ROOT/bench/.venv"; PY="$VENV/bin/python"; ensure_venv requirements.txt'
    )
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Creating the virtual environment in bench/.venv" in result.stdout


def test_demo_sh_refuses_a_port_in_use_before_seeding(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("demo.sh", "bootstrap.sh"):
        shutil.copy(ROOT / "scripts" / name, scripts / name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["bash", str(scripts / "demo.sh")],
            cwd=tmp_path,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == (
        f"Port {port} is in use: is the demo already running? Stop it first (Ctrl+C); for a second demo "
        f"beside it, run PORT={port + 10} scripts/demo.sh from another clone (in this folder it would "
        "seed again and revoke the running demo's key)\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scripts"]  # no .venv, .env or database


# --- The demo publishes for anonymous visitors: only into a public feed, only clean text ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    "shape",
    [{"visibility": "private"}, {"visibility": "authenticated"}, {"kind": "chat"}],
    ids=["private", "authenticated", "chat-room"],
)
def test_the_demo_never_publishes_into_a_channel_that_is_not_a_public_feed(
    client: Client, shape: dict[str, Any]
) -> None:
    # Anyone may ask (a CSRF token is all it takes), so an operator's own channel that
    # happens to be called "answers" took an anonymous visitor's text, private or not.
    channel, _created = upsert_channel("answers", stream_storage="fold", **shape)
    page = client.get("/demo/streamed/")
    assert page.status_code == 200
    assert "/events/answers/" not in page.content.decode()
    response = client.post("/demo/streamed/ask", {"question": "anonymous text"})
    assert response.status_code == 404
    assert response.json()["error"] == "channel_not_found"
    assert not Message.objects.filter(channel=channel).exists()


@pytest.mark.django_db
def test_a_question_with_nul_is_a_400_not_a_failed_answer_and_a_traceback(client: Client) -> None:
    # It was answered 202, then the first part holding it failed in the background
    # (a traceback in the log for each such request) and the answer ended "failed".
    upsert_channel("answers", stream_storage="fold")
    response = client.post("/demo/streamed/ask", {"question": "nul \x00 here"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": "The question holds U+0000 (NUL), which Pushsite does not store.",
    }
    assert not Message.objects.exists()
