from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.exceptions import PushsiteError
from events.publish.store import publish
from events.publish.validate import data_or_text


class Command(BaseCommand):
    help = (
        "Publish a message from the shell. The payload is parsed as JSON when it is "
        "valid JSON, else sent as a string."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("payload", help="JSON (e.g. '{\"score\": 3}') or plain text.")
        parser.add_argument("--event", default="message", help="Event type (default: message).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            # The one JSON reader (size, depth, numbers, strings), as for every other way in.
            data = data_or_text(options["payload"], subject="The payload")
            message = publish(options["slug"], data, options["event"], publisher="command:publish")
        except PushsiteError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"Published {options['slug']}#{message.sequence} ({message.event}).")
