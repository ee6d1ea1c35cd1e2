"""System checks: bad configuration fails at start, with an id."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core.checks import CheckMessage, Error, Info, Warning, register
from django.core.files.storage import storages

from events.conf import SettingsGroup, conf


@register()
def check_channel_layer(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    layers = getattr(settings, "CHANNEL_LAYERS", {})
    if "default" not in layers:
        return [
            Error(
                "Pushsite needs a default channel layer.",
                hint="Set CHANNEL_LAYERS['default'] (REDIS_URL selects channels-redis).",
                id="events.E001",
            )
        ]
    return []


@register()
def check_pushsite_settings(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    overrides = getattr(settings, "PUSHSITE", {}) or {}
    known = SettingsGroup.every_setting()
    for name in overrides:
        if name not in known:
            messages.append(
                Warning(
                    f"PUSHSITE_{name} is not a Pushsite setting and is ignored.",
                    hint="The README lists the settings.",
                    id="events.W001",
                )
            )
    for name, setting in known.items():
        try:
            value = setting.current()
        except Exception as exc:
            messages.append(Error(str(exc), id="events.E002"))
            continue
        if not setting.allows(value):
            least = "greater than zero" if setting.minimum is None else f"at least {setting.minimum}"
            messages.append(Error(f"PUSHSITE_{name} must be {least}, not {value}.", id="events.E003"))
    heartbeat = _number(conf, "HEARTBEAT_SECONDS")
    timeout = _number(conf, "SEND_TIMEOUT_SECONDS")
    if heartbeat is not None and heartbeat > 55:
        messages.append(
            Warning(
                "PUSHSITE_HEARTBEAT_SECONDS is above 55: many proxies close connections idle for 60 s.",
                id="events.W002",
            )
        )
    if timeout is not None and timeout < 1:
        messages.append(
            Warning(
                "PUSHSITE_SEND_TIMEOUT_SECONDS below 1 s evicts readers on ordinary network hiccups.",
                id="events.W003",
            )
        )
    return messages


@register()
def check_development_server(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """Under ``runserver`` (daphne, which buffers request bodies), say that streamed publishes arrive whole."""
    if sys.argv[1:2] != ["runserver"]:
        return []
    return [
        Info(
            "manage.py runserver (daphne) hands a request body over only when it ends: "
            "POST /api/channels/<slug>/stream publishes every line at the end.",
            hint="Run manage.py serve (uvicorn, what scripts/demo.sh runs) to publish lines as they arrive.",
            id="events.I001",
        )
    ]


# Commands that serve requests, or check that a deployment could: the production checks
# below apply to them only, so `migrate` or `collectstatic` itself runs before they pass.
SERVING_COMMANDS = ("serve", "runserver", "check")
# With DJANGO_DEBUG on (demo.sh's .env) collectstatic writes no manifest: say it with debug off.
COLLECTSTATIC_COMMAND = "DJANGO_DEBUG=0 .venv/bin/python manage.py collectstatic --noinput"


@register()
def check_production_serving(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    """A server that would answer every request with an error refuses to start instead."""
    if sys.argv[1:2] not in [[name] for name in SERVING_COMMANDS]:
        return []
    messages: list[CheckMessage] = []
    storage = storages["staticfiles"]
    if isinstance(storage, ManifestFilesMixin) and not storage.exists(storage.manifest_name):
        messages.append(
            Error(
                f"The static files manifest {storage.path(storage.manifest_name)} is missing: "
                "with DJANGO_DEBUG off every page would answer 500.",
                hint=f"Run {COLLECTSTATIC_COMMAND} (it writes DJANGO_STATIC_ROOT) before serving.",
                id="events.E004",
            )
        )
    if not settings.DEBUG and not settings.ALLOWED_HOSTS:
        messages.append(
            Error(
                "DJANGO_ALLOWED_HOSTS is empty: with DJANGO_DEBUG off every request would answer 400.",
                hint="Set DJANGO_ALLOWED_HOSTS to the host names this site answers to, e.g. "
                "DJANGO_ALLOWED_HOSTS=push.example.com.",
                id="events.E005",
            )
        )
    return messages


def _number(source: Any, name: str) -> float | None:
    try:
        return float(getattr(source, name))
    except Exception:
        return None
