from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from events.models import ApiKey, Channel, Kind, StreamStorage, Visibility
from events.provisioning import create_api_key, upsert_channel

DEMO_CHANNELS = [
    ("news", "Site news", Visibility.PUBLIC),
    ("scores", "Live scores", Visibility.PUBLIC),
    ("status", "Service status", Visibility.PUBLIC),
    ("staff", "Staff room (private)", Visibility.PRIVATE),
    ("answers", "Streamed answers", Visibility.PUBLIC),
]
# The streamed-answer demo (/demo/streamed/): one stored message per answer.
FOLDED_CHANNELS = {"answers"}
# Pages served from here may embed the "scores" widget: the README's widget
# snippet, saved as a file and served with python3 -m http.server 8001.
DEMO_WIDGET_ORIGINS = ["http://localhost:8001", "http://127.0.0.1:8001"]
DEMO_WIDGET_CHANNEL = "scores"
DEMO_KEY_NAME = "demo"
DEMO_ROOM = "lobby"


class Command(BaseCommand):
    help = "Create the demo channels, an admin login and a fresh demo API key (printed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--admin-user", default="admin")

    def handle(self, *args: Any, **options: Any) -> None:
        for slug, title, visibility in DEMO_CHANNELS:
            storage = StreamStorage.FOLD if slug in FOLDED_CHANNELS else None
            upsert_channel(slug, title=title, visibility=visibility, stream_storage=storage)
        self.stdout.write("Demo channels: " + ", ".join(slug for slug, _, _ in DEMO_CHANNELS))
        scores = Channel.objects.get(slug=DEMO_WIDGET_CHANNEL)
        origins = list(dict.fromkeys([*scores.allowed_origins, *DEMO_WIDGET_ORIGINS]))
        upsert_channel(DEMO_WIDGET_CHANNEL, allowed_origins=origins)
        self.stdout.write(
            f"Widget demo: {DEMO_WIDGET_CHANNEL!r} may be embedded by pages from "
            + " and ".join(DEMO_WIDGET_ORIGINS)
        )
        upsert_channel(DEMO_ROOM, title="Lobby", kind=Kind.CHAT, guests_may_post=True)
        self.stdout.write(f"Demo chat room (guests welcome): /rooms/{DEMO_ROOM}/")

        User = get_user_model()
        username = options["admin_user"]
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"Admin login: {username} (exists; password unchanged: "
                f".venv/bin/python manage.py changepassword {username})"
            )
        else:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(username, "", password)
            self.stdout.write(f"Admin login: {username} / {password}")

        # One live demo key at a time: the previous one is revoked.
        ApiKey.objects.filter(name=DEMO_KEY_NAME).update(is_active=False)
        _key, secret = create_api_key(DEMO_KEY_NAME, all_channels=True)
        self.stdout.write("Demo API key (all channels):")
        self.stdout.write(secret)
