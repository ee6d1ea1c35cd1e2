"""Settings for the in-process tests: production settings with test-safe defaults.

Real server processes started by the tests use pushsite.settings with their own
environment (tests/support/servers.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-used-anywhere-else")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
# Not the development .env that scripts/demo.sh writes: tests run as production does.
os.environ.setdefault("DJANGO_ENV_FILE", "")

from pushsite.settings import *  # noqa: F403

# In-process tests always use the in-memory layer; Redis is exercised by the
# system tests against real server processes.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
# Serve static files from the apps' folders: no collectstatic before tests.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    import tempfile

    # A real file, as in production: an in-memory test database uses SQLite's
    # shared cache, whose table locks ignore busy_timeout ("table is locked").
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"pushsite-test-{os.getpid()}.sqlite3")
    }
