from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.access.auth import active_channels, mint_token
from events.conf import conf
from events.exceptions import ChannelNotFound, InvalidInput


class Command(BaseCommand):
    help = (
        "Print a signed subscribe token for private channels (alone on the last line). "
        "It is bound to no API key: only its expiry or a new SECRET_KEY ends it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="+", metavar="slug")
        parser.add_argument(
            "--ttl", type=int, default=None, help="Lifetime in seconds (capped by TOKEN_MAX_AGE_SECONDS)."
        )
        parser.add_argument("--subject", default="", help="Who the token is for (shown in logs).")

    def handle(self, *args: Any, **options: Any) -> None:
        ttl = options["ttl"] if options["ttl"] is not None else conf.TOKEN_MAX_AGE_SECONDS
        if ttl > conf.TOKEN_MAX_AGE_SECONDS:
            # Said on stderr: stdout stays the token alone, for scripts.
            self.stderr.write(
                f"--ttl {ttl} is above PUSHSITE_TOKEN_MAX_AGE_SECONDS: "
                f"the token lasts {conf.TOKEN_MAX_AGE_SECONDS} s."
            )
        try:
            # Named by identity: a channel re-created with the same slug is not granted.
            channels = active_channels(list(dict.fromkeys(options["slugs"])))
        except ChannelNotFound as exc:
            raise CommandError(exc.detail) from exc
        try:
            token = mint_token(channels, ttl=ttl, subject=options["subject"])
        except InvalidInput as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(token)
