from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.provisioning import create_api_key


class Command(BaseCommand):
    help = "Create an API key; its secret is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--channel",
            action="append",
            dest="channels",
            default=[],
            metavar="SLUG",
            help="Limit the key to this channel; repeat for more. Default: every channel.",
        )
        parser.add_argument(
            "--all-channels",
            action="store_true",
            help="Every channel, including ones created later (what no --channel means; say it explicitly).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all_channels"] and options["channels"]:
            raise CommandError("Give --all-channels or --channel, not both.")
        # The contract: without --channel the key is for all channels, set explicitly on the key.
        all_channels = not options["channels"]
        try:
            key, secret = create_api_key(options["name"], options["channels"], all_channels=all_channels)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        scope = ", ".join(options["channels"]) or "all channels"
        self.stdout.write(f"Created API key {key.name!r} (prefix {key.prefix}) for {scope}.")
        self.stdout.write("The secret is shown only now; store it safely:")
        self.stdout.write(secret)
