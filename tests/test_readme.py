"""The README as a newcomer runs it: commands that work as written, outputs that match."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command, get_commands

from events.demo.management.commands.seed_demo import DEMO_WIDGET_ORIGINS
from events.models import Channel
from events.provisioning import upsert_channel
from events.wire import frames
from pushsite.settings import load_env_file
from tests.support.servers import ROOT, free_port

README = (ROOT / "README.md").read_text()


def test_every_manage_py_command_in_the_readme_runs_from_the_virtual_environment() -> None:
    uses = re.findall(r"(\S*)\s+manage\.py (\w+)", README)
    assert uses, "the README shows manage.py commands"
    for runner, command in uses:
        assert runner.endswith(".venv/bin/python"), f"manage.py {command} is shown without .venv/bin/python"
        assert command in get_commands(), f"the README shows manage.py {command}, which does not exist"
    assert "python manage.py" not in README.replace(".venv/bin/python manage.py", "")


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda page: page.name)
def test_every_manage_py_command_in_the_docs_runs_from_the_virtual_environment(page: Path) -> None:
    # A fresh Debian machine has no `python`, and no system Python has Django: a
    # newcomer copying `python manage.py ...` from a doc page gets "command not found".
    text = page.read_text()
    for runner, command in re.findall(r"(\S*python\S*)\s+manage\.py (\w+)", text):
        assert runner.endswith(".venv/bin/python"), (
            f"{page.name}: manage.py {command} is shown without .venv/bin/python"
        )
        assert command in get_commands(), f"{page.name} shows manage.py {command}, which does not exist"


def test_the_readme_shows_the_opening_event_as_the_server_sends_it() -> None:
    frame = frames.open_frame(
        ["news"], cursor="0~3fa9c0b1", retry_milliseconds=2000, titles={"news": "Site news"}, history=False
    ).decode()
    assert frame in README
    sample = README[README.index("Terminal 1 prints:") :]
    assert json.loads(sample.split("data: ", 1)[1].split("\n", 1)[0])["event"] == "pushsite.open"


@pytest.mark.django_db
def test_the_demo_lets_the_readme_widget_page_embed_scores() -> None:
    upsert_channel("scores", allowed_origins=["https://partner.example"])
    call_command("seed_demo", stdout=StringIO())
    origins = Channel.objects.get(slug="scores").allowed_origins
    assert origins == ["https://partner.example", *DEMO_WIDGET_ORIGINS]
    assert "http://localhost:8001" in DEMO_WIDGET_ORIGINS
    assert "python3 -m http.server 8001" in README
    assert "open http://localhost:8001/" in README


def test_env_file_fills_only_what_the_environment_does_not_set(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n\nDJANGO_DEBUG=1\nDJANGO_SECRET_KEY='quoted value'\nDATABASE_URL=sqlite:///x\nnot a pair\n"
    )
    environ = {"DATABASE_URL": "postgres://real"}
    assert load_env_file(env_file, environ) == ["DJANGO_DEBUG", "DJANGO_SECRET_KEY"]
    assert environ == {
        "DATABASE_URL": "postgres://real",
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": "quoted value",
    }
    assert load_env_file(tmp_path / "missing", environ) == []


def _manage(tmp_path: Path, env_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PUSHSITE_"))}
    env.update(DJANGO_SETTINGS_MODULE="pushsite.settings", DJANGO_ENV_FILE=env_file)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_runs_with_the_development_env_file_and_no_secret_in_the_environment(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=1\nDJANGO_SECRET_KEY=from-the-file-0123456789\n")
    result = _manage(
        tmp_path,
        str(env_file),
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True from-the-file-0123456789")
    refused = _manage(tmp_path, "", "check")
    assert refused.returncode != 0
    assert "scripts/demo.sh writes a .env file" in refused.stderr


def test_runserver_says_at_start_that_streamed_publishes_arrive_whole(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PUSHSITE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="pushsite.settings",
        DJANGO_ENV_FILE="",
        DJANGO_DEBUG="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while "silenced)" not in output:  # the end of runserver's system check report
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"runserver printed nothing more within 60 s:\n{output}"
            line = process.stdout.readline()
            assert line, f"runserver exited:\n{output}"
            output += line
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "(events.I001) manage.py runserver (daphne) hands a request body over only when it ends" in output
    checked = _manage(tmp_path, "", "check")  # other commands do not say it
    assert "events.I001" not in checked.stdout + checked.stderr


def test_the_readme_documents_every_setting_of_every_settings_group() -> None:
    from events.conf import SettingsGroup

    documented = set(re.findall(r"`PUSHSITE_([A-Z0-9_]+)`", README))
    assert sorted(set(SettingsGroup.every_setting()) - documented) == []
