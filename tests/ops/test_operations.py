"""Health, metrics, system checks and settings from the environment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from channels.layers import channel_layers
from django.core.checks import run_checks
from django.test import AsyncClient, override_settings

from tests.support.servers import ROOT, ServerProcess, collected_static_root, free_port

MANIFEST_STORAGE = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnopq",
    "DJANGO_ALLOWED_HOSTS": "push.example.com",
}


@pytest.mark.django_db(transaction=True)
async def test_healthz_reports_database_and_channel_layer() -> None:
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
    assert response.json()["channel_layer"] == "ok"


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1"]},
        }
    }
)
@pytest.mark.django_db(transaction=True)
async def test_healthz_names_the_failing_part(caplog: pytest.LogCaptureFixture) -> None:
    channel_layers.backends.clear()
    with caplog.at_level(logging.INFO):
        response = await AsyncClient().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["database"] == "ok"
    assert body["channel_layer"].startswith("error")
    assert "channel_layer" in body["detail"]
    # One WARNING naming the sick part, not a second ERROR from django.request.
    assert not [r for r in caplog.records if r.name == "django.request"]
    named = [r for r in caplog.records if r.name == "events.ops.views" and "channel_layer" in r.getMessage()]
    assert [r.levelname for r in named] == ["WARNING"]


def test_metrics_on_a_real_server(server: ServerProcess, api_key: str) -> None:
    httpx.post(
        f"{server.url}/api/channels/pool-56/messages",
        json={"data": 1},
        headers={"Authorization": f"Bearer {api_key}"},
    ).raise_for_status()
    text = httpx.get(f"{server.url}/metrics").text
    assert 'pushsite_messages_published_total{channel="pool-56"}' in text
    for name in (
        "pushsite_connections",
        "pushsite_deliveries_total",
        "pushsite_publish_seconds_bucket",
        "pushsite_delivery_lag_seconds_bucket",
        "pushsite_slow_reader_evictions_total",
    ):
        assert name in text


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"HEARTBEAT_SECONDS": 0}, "events.E003"),
        ({"MAX_BACKLOG_BYTES": "lots"}, "events.E002"),
        ({"NOT_A_SETTING": 1}, "events.W001"),
        ({"HEARTBEAT_SECONDS": 90}, "events.W002"),
        ({"MAX_REWIND": -1}, "events.E003"),
        ({"CHAT_RATE_MESSAGES": 0}, "events.E003"),
        ({"CHAT_HISTORY": "many"}, "events.E002"),
    ],
)
def test_system_checks_catch_bad_settings(override: dict[str, object], check_id: str) -> None:
    with override_settings(PUSHSITE=override):
        assert check_id in {message.id for message in run_checks()}


@pytest.mark.parametrize(
    "override",
    [
        {"MAX_REWIND": 0},  # "no rewind" is a choice, not a mistake
        {"CHAT_HISTORY": 20, "PRESENCE_REFRESH_SECONDS": 2, "CHAT_NICKNAME_HOLD_DAYS": 7},
    ],
)
def test_system_checks_accept_good_settings_of_the_core_and_of_features(override: dict[str, object]) -> None:
    with override_settings(PUSHSITE=override):
        found = {message.id for message in run_checks()}
    assert not found & {"events.E002", "events.E003", "events.W001"}


def test_no_channel_layer_is_a_system_check_error() -> None:
    with override_settings(CHANNEL_LAYERS={}):
        assert "events.E001" in {message.id for message in run_checks()}


def _settings_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PUSHSITE_"))}
    env["DJANGO_SETTINGS_MODULE"] = "pushsite.settings"
    env["DJANGO_ENV_FILE"] = ""  # never a developer's .env (scripts/demo.sh)
    env.update(extra)
    return env


def test_secret_key_is_required_when_debug_is_off() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_settings_env(DJANGO_DEBUG="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    # The sentence alone, not buried under a traceback.
    assert result.stderr.startswith(
        "Configuration error: DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"
    )
    assert "Traceback" not in result.stderr


def test_check_deploy_passes_with_production_settings() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_settings_env(**PRODUCTION, DJANGO_HTTPS="1", DJANGO_STATIC_ROOT=str(collected_static_root())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", ["check", "serve", "runserver"])
def test_a_server_without_collected_static_files_is_a_system_check_error(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", command])
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=tmp_path):
        (error,) = [message for message in run_checks() if message.id == "events.E004"]
        assert "every page would answer 500" in error.msg
        assert error.hint == (
            "Run DJANGO_DEBUG=0 .venv/bin/python manage.py collectstatic --noinput "
            "(it writes DJANGO_STATIC_ROOT) before serving."
        )
        (tmp_path / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
        assert "events.E004" not in {message.id for message in run_checks()}


def test_the_production_checks_leave_migrate_and_debug_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", "migrate"])
    with override_settings(STORAGES=MANIFEST_STORAGE, STATIC_ROOT=tmp_path, DEBUG=False, ALLOWED_HOSTS=[]):
        assert not {"events.E004", "events.E005"} & {message.id for message in run_checks()}
    monkeypatch.setattr(sys, "argv", ["manage.py", "serve"])
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[]):  # tests/settings.py: finders, no manifest
        assert not {"events.E004", "events.E005"} & {message.id for message in run_checks()}


def test_no_allowed_hosts_without_debug_is_a_system_check_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", "serve"])
    with override_settings(DEBUG=False, ALLOWED_HOSTS=[]):
        (error,) = [message for message in run_checks() if message.id == "events.E005"]
    assert error.msg == "DJANGO_ALLOWED_HOSTS is empty: with DJANGO_DEBUG off every request would answer 400."


def test_serve_refuses_to_start_without_collected_static_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=_settings_env(**PRODUCTION, DJANGO_STATIC_ROOT=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "(events.E004)" in result.stderr
    assert "Run DJANGO_DEBUG=0 .venv/bin/python manage.py collectstatic --noinput" in result.stderr


def test_serve_refuses_to_start_without_allowed_hosts() -> None:
    env = _settings_env(**PRODUCTION, DJANGO_STATIC_ROOT=str(collected_static_root()))
    del env["DJANGO_ALLOWED_HOSTS"]
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "(events.E005) DJANGO_ALLOWED_HOSTS is empty" in result.stderr


def test_environment_settings_reach_pushsite_conf() -> None:
    code = "from events.conf import conf; print(conf.HEARTBEAT_SECONDS, conf.MAX_MESSAGE_BYTES)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=_settings_env(
            DJANGO_DEBUG="1", PUSHSITE_HEARTBEAT_SECONDS="7.5", PUSHSITE_MAX_MESSAGE_BYTES="1000"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "7.5 1000"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "channels.layers.InMemoryChannelLayer"),
        (
            {"REDIS_URL": "redis://r1:6379/0"},
            "pubsub.RedisPubSubChannelLayer [{'address': 'redis://r1:6379/0'",
        ),
        (
            {
                "REDIS_URL": "redis://r1:6379/0,redis://r2:6379/0",
                "REDIS_LAYER": "core",
                "REDIS_GROUP_EXPIRY": "60",
            },
            "core.RedisChannelLayer [{'address': 'redis://r1:6379/0'",
        ),
        (
            {"REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_SENTINEL_MASTER": "main"},
            "pubsub.RedisPubSubChannelLayer [{'sentinels': [('s1', 26379), ('s2', 26380)], 'master_name': 'main'",
        ),
    ],
)
def test_channel_layer_from_the_environment(env: dict[str, str], expected: str) -> None:
    code = (
        "from django.conf import settings; layer = settings.CHANNEL_LAYERS['default']; "
        "print(layer['BACKEND'], layer.get('CONFIG', {}).get('hosts', ''), layer.get('CONFIG', {}).get('group_expiry'))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**_settings_env(DJANGO_DEBUG="1"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout.strip().splitlines()[-1]
    assert expected in output
    if env.get("REDIS_LAYER") == "core":
        assert "redis://r2:6379/0" in output
        assert output.endswith(" 60")


def test_unknown_redis_layer_is_a_clear_start_up_error() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**_settings_env(DJANGO_DEBUG="1"), "REDIS_URL": "redis://r1", "REDIS_LAYER": "kafka"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert 'REDIS_LAYER must be "pubsub" or "core"' in result.stderr


def test_several_workers_need_a_shared_layer() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--workers", "2", "--port", "1"],
        cwd=ROOT,
        env=_settings_env(DJANGO_DEBUG="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Several workers need a shared channel layer: set REDIS_URL" in result.stderr
