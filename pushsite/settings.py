"""Pushsite settings: every deploy-time value comes from the environment.

The defaults need no service at all (SQLite in the project folder and the
in-memory channel layer). The README's settings table lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

# Lets the admin and forms name their model: ModelAdmin[Channel] (checked by mypy).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated environment variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from exc


def load_env_file(path: Path, environ: dict[str, str] | Any = os.environ) -> list[str]:
    """Add ``KEY=VALUE`` lines of ``path`` to ``environ`` unless already set; the keys added.

    ``scripts/demo.sh`` writes ``.env`` (DJANGO_DEBUG=1 and a random secret key) so
    that the README's ``.venv/bin/python manage.py ...`` commands run with the same
    development settings as the demo server. The real environment always wins;
    deployments simply have no such file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    added = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key and key not in environ:
            environ[key] = value
            added.append(key)
    return added


# DJANGO_ENV_FILE names another file; empty reads none (the tests set it empty).
_env_file = os.environ.get("DJANGO_ENV_FILE", str(BASE_DIR / ".env"))
if _env_file:
    load_env_file(Path(_env_file))

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off. "
            "Generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))' "
            "(for development, scripts/demo.sh writes a .env file with DJANGO_DEBUG=1 and a key)."
        )
    # Only ever used with DJANGO_DEBUG=1 on a developer's machine.
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Only behind a proxy that sets (or strips) X-Forwarded-Host: every path reads it then (events/http/hosts.py).
USE_X_FORWARDED_HOST = env_bool("DJANGO_USE_X_FORWARDED_HOST", False)

HTTPS = env_bool("DJANGO_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # /healthz is probed over plain HTTP by load balancers inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz\Z", r"^metrics\Z"]  # \Z: "$" would pass "healthz\n"

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    # daphne first: it gives `runserver` an ASGI development server.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "channels",
    "events",
    # Features around the core (events/ depends on none of them).
    "events.chat",
    "events.announcements",
    "events.ops",
    "events.widgets",
    "events.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "pushsite.middleware.AsyncWhiteNoiseMiddleware",
    # Reads a channel's allowed origins off the event loop for the CORS check below.
    "events.access.cors.ChannelOriginsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Every response, from Django or not (streams, the API-key publish), also passes
# pushsite/headers.py, which adds the Content-Security-Policy and any of the
# headers above that a response lacks. events/publish/fast_path.py stands in for
# this list exactly, and tests/publish/test_fast_path.py fails when it changes.

ROOT_URLCONF = "pushsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "pushsite.asgi.application"

# --- Database -------------------------------------------------------------
# DATABASE_URL, e.g. postgres://user:pass@host:5432/name. Default: SQLite file.
# No persistent per-thread connections: under ASGI, Django runs each request's
# sync code in a thread of its own, so a per-thread connection would outlive
# its thread (PostgreSQL ran out of connections in the system tests). PostgreSQL
# gets a per-process pool instead (psycopg_pool); streams never hold a
# connection while idle (they only touch the database to authorise and replay).
DATABASES = {
    "default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, with a checkout that replaces a killed connection at
    # once instead of sleeping through the pool's back-off (pushsite/postgresql/).
    DATABASES["default"]["ENGINE"] = "pushsite.postgresql"
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_SIZE", 10),
        # How long a request waits for a connection before it fails with 503:
        # also how long a publish takes to fail while the database is down.
        "timeout": env_int("DATABASE_POOL_TIMEOUT", 3),
        # A background reconnect that keeps failing backs off (1 s, 2 s, ...)
        # and gives up after this long; the next request then starts a fresh
        # attempt, so recovery after an outage is not paced by a long back-off.
        "reconnect_timeout": env_int("DATABASE_POOL_RECONNECT_TIMEOUT", 5),
    }
    # Off: the pool's own check sleeps between attempts (1 s, 2 s, ...) when
    # connections were killed; pushsite.postgresql checks every checkout
    # itself (one empty round trip) and replaces a dead one without sleeping.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent
    # publishers queue on busy_timeout instead of failing with "database is
    # locked" when a read lock cannot be upgraded. WAL lets readers (stream
    # replays) run while a publish writes.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------
# REDIS_URL unset: in-memory layer (one server process). Set: channels-redis,
# which lets many processes on many machines share groups. Several URLs,
# comma-separated, shard channels across Redis servers; REDIS_SENTINELS
# (host:port,...) with REDIS_SENTINEL_MASTER uses Sentinel instead.
# REDIS_LAYER picks the layer: "pubsub" (default) publishes once per group,
# "core" writes to every member's list; docs/scaling.md has the measurements.
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SENTINELS = env_list("REDIS_SENTINELS", [])
REDIS_LAYER = os.environ.get("REDIS_LAYER", "pubsub")
# Fail fast when Redis is unreachable instead of hanging the caller.
_REDIS_CONNECTION = {"socket_connect_timeout": 2, "socket_keepalive": True}
if REDIS_SENTINELS:
    REDIS_HOSTS: list[Any] = [
        {
            "sentinels": [
                (host, int(port)) for host, _, port in (item.rpartition(":") for item in REDIS_SENTINELS)
            ],
            "master_name": os.environ.get("REDIS_SENTINEL_MASTER", "mymaster"),
            **_REDIS_CONNECTION,
        }
    ]
else:
    REDIS_HOSTS = [{"address": url, **_REDIS_CONNECTION} for url in env_list("REDIS_URL", [])]

if REDIS_HOSTS:
    if REDIS_LAYER == "core":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": REDIS_HOSTS,
                    "group_expiry": env_int("REDIS_GROUP_EXPIRY", 86400),
                    "prefix": "pushsite",
                },
            }
        }
    elif REDIS_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": REDIS_HOSTS, "prefix": "pushsite"},
            }
        }
    else:
        raise ImproperlyConfigured(f'REDIS_LAYER must be "pubsub" or "core", not {REDIS_LAYER!r}.')
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Cache ---------------------------------------------------------------------
# Rate limits (events/access/ratelimit.py) count in the cache, so several processes
# must share it: Redis when REDIS_URL is set (its first URL), else per process.
if REDIS_HOSTS and not REDIS_SENTINELS:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_HOSTS[0]["address"],
            "KEY_PREFIX": "pushsite",
            # Rate limits fail open when Redis is away; do not wait long for it.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static -----------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/rooms/"
LOGOUT_REDIRECT_URL = "/rooms/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Serve straight from the apps' static folders when DEBUG is on, so a fresh
# checkout works without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- CORS for the JSON API ------------------------------------------------
# The SSE stream decides cross-origin access per channel itself (it does not
# pass through Django middleware); the JSON history API does the same in its
# view. django-cors-headers handles the global preflight for /api/ only.
CORS_URLS_REGEX = r"^/api/"  # every URL under /api/ ("^/api/.*$" left out a path with a newline)
CORS_ALLOWED_ORIGINS = env_list("PUSHSITE_API_CORS_ORIGINS", [])

# --- Pushsite ----------------------------------------------------------------
# Every PUSHSITE_<NAME> environment variable overrides the setting <NAME>;
# events/conf.py holds the defaults and converts the text to the right type.
PUSHSITE = {
    name.removeprefix("PUSHSITE_"): value
    for name, value in os.environ.items()
    if name.startswith("PUSHSITE_") and name != "PUSHSITE_API_CORS_ORIGINS"
}

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {"without_traceback": {"()": "pushsite.logfilters.WithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "events": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "pushsite": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # A request for a host this site does not serve: one line, not a traceback each.
        "django.security.DisallowedHost": {
            "handlers": ["console"],
            "level": "INFO",
            "filters": ["without_traceback"],
            "propagate": False,
        },
    },
}
