from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pushsite.server import serve


class Command(BaseCommand):
    help = "Serve Pushsite in production mode (uvicorn, uvloop, httptools; graceful SIGTERM)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Server processes sharing the port (needs REDIS_URL when more than 1).",
        )
        parser.add_argument(
            "--forwarded-allow-ips",
            default="127.0.0.1",
            help="Proxies whose X-Forwarded-* headers are trusted.",
        )
        parser.add_argument(
            "--portable",
            action="store_true",
            help="Streams write through plain ASGI send, not directly to the connection.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers = options["workers"]
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if workers > 1 and "InMemory" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
            raise CommandError(
                "Several workers need a shared channel layer: set REDIS_URL "
                "(the in-memory layer only reaches streams in its own process)."
            )
        serve(
            options["host"],
            options["port"],
            workers=workers,
            forwarded_allow_ips=options["forwarded_allow_ips"],
            portable=options["portable"],
        )
