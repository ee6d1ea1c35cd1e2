from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events.access.auth import mint_token
from events.conf import conf


class Command(BaseCommand):
    help = "Print a signed subscribe token for private channels (alone on the last line)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="+", metavar="slug")
        parser.add_argument(
            "--ttl", type=int, default=None, help="Lifetime in seconds (capped by TOKEN_MAX_AGE_SECONDS)."
        )
        parser.add_argument("--subject", default="", help="Who the token is for (shown in logs).")

    def handle(self, *args: Any, **options: Any) -> None:
        ttl = options["ttl"] if options["ttl"] is not None else conf.TOKEN_MAX_AGE_SECONDS
        self.stdout.write(mint_token(options["slugs"], ttl=ttl, subject=options["subject"]))
