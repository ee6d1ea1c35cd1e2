"""The management commands of the contract, run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
import time
from io import StringIO

import httpx
import pytest
from django.core.management import CommandError, call_command

from events.models import ApiKey, Channel, Message, hash_secret
from tests.support.servers import ROOT, ServerProcess, Site

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_channel_creates_then_updates() -> None:
    assert "Created channel scores" in run("create_channel", "scores", "--title", "Scores")
    out = run(
        "create_channel", "scores", "--visibility", "private", "--allow-origin", "https://partner.example"
    )
    assert "Updated channel scores (private)" in out
    channel = Channel.objects.get(slug="scores")
    assert channel.title == "Scores"
    assert channel.allowed_origins == ["https://partner.example"]


def test_create_channel_sets_stream_storage() -> None:
    run("create_channel", "answers")
    assert Channel.objects.get(slug="answers").stream_storage == "keep"  # the default
    assert "Updated channel answers" in run("create_channel", "answers", "--stream-storage", "fold")
    assert Channel.objects.get(slug="answers").stream_storage == "fold"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad slug!"], "slug"),
        (["x", "--allow-origin", "https://site.example/path"], "is not an origin"),
        (["x", "--allow-origin", "partner.example"], "is not an origin"),
    ],
)
def test_create_channel_explains_bad_input(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_channel", *args)
    assert not Channel.objects.exists()


def test_create_api_key_prints_the_secret_alone_on_the_last_line() -> None:
    run("create_channel", "news")
    out = run("create_api_key", "ci", "--channel", "news")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("psk_")
    key = ApiKey.objects.get(name="ci")
    assert key.secret_hash == hash_secret(secret)
    assert secret not in key.secret_hash
    assert list(key.channels.values_list("slug", flat=True)) == ["news"]


def test_create_api_key_for_an_unknown_channel_fails() -> None:
    with pytest.raises(CommandError, match="No channel is called 'nope'"):
        run("create_api_key", "ci", "--channel", "nope")
    assert not ApiKey.objects.exists()


def test_publish_parses_json_or_sends_text() -> None:
    run("create_channel", "news")
    assert "Published news#1 (notice)" in run("publish", "news", '{"a": 1}', "--event", "notice")
    run("publish", "news", "just words")
    assert list(Message.objects.values_list("data", flat=True)) == [{"a": 1}, "just words"]
    with pytest.raises(CommandError, match="1 to 64"):
        run("publish", "news", "x", "--event", "bad type")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("[" * 40 + "]" * 40, "nests arrays and objects more than 32 deep"),  # the API's 400
        ("9" * 400, "integer of 400 digits"),
        ("9" * 5000, "integer of 5000 digits"),  # was Python's ValueError, a traceback
        ('{"data": 1e400}', "out of range"),
    ],
    ids=["deep", "400-digits", "5000-digits", "1e400"],
)
def test_publish_keeps_the_rules_of_every_other_way_in(payload: str, fragment: str) -> None:
    # The shell is a client too: its JSON is read by the one reader
    # (events/publish/validate.py), as `pipe` and the API read theirs.
    run("create_channel", "news")
    with pytest.raises(CommandError, match=fragment):
        run("publish", "news", payload)
    assert not Message.objects.exists()


@pytest.mark.system
def test_listen_prints_events_and_resumes(server: ServerProcess, site: Site, api_key: str) -> None:
    slug = "pool-57"
    first = httpx.post(
        f"{server.url}/api/channels/{slug}/messages",
        json={"data": "before"},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["id"]
    listener = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "listen",
            slug,
            "--url",
            server.url,
            "--count",
            "2",
            "--last-event-id",
            str(first - 1),
        ],
        cwd=ROOT,
        env=site.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stderr is not None
        # Said before any event arrives, so a quiet channel does not look like a hang.
        assert listener.stderr.readline() == f"Listening to {slug} at {server.url} (Ctrl-C to stop).\n"
        line = listener.stdout.readline()  # the replayed message
        assert line.startswith(f"{first}~")  # the stream id: sequence and the channel's epoch
        assert "\tmessage\t" in line
        assert '"data":"before"' in line
        second = httpx.post(
            f"{server.url}/api/channels/{slug}/messages",
            json={"event": "tick", "data": "live"},
            headers={"Authorization": f"Bearer {api_key}"},
        ).json()["id"]
        line = listener.stdout.readline()
        assert line.startswith(f"{second}~")
        assert "\ttick\t" in line
        assert listener.wait(timeout=10) == 0
    finally:
        listener.kill()


@pytest.mark.system
def test_listen_reports_a_refusal_instead_of_retrying(server: ServerProcess, site: Site) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "listen", "private-room", "--url", server.url],
        cwd=ROOT,
        env=site.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "404" in result.stderr  # a private channel is refused as if it did not exist
    assert "(a private channel needs --token or --api-key)" in result.stderr
    assert time.monotonic() - started < 20
