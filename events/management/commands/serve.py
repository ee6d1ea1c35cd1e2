from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pushsite.server import serve


class Command(BaseCommand):
    help = "Serve Pushsite in production mode (uvicorn, uvloop, httptools; graceful SIGTERM)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--forwarded-allow-ips",
            default="127.0.0.1",
            help="Proxies whose X-Forwarded-* headers are trusted.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        serve(options["host"], options["port"], forwarded_allow_ips=options["forwarded_allow_ips"])
