from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.clients.listener import ListenError, listen
from events.wire.frames import OPEN_EVENT
from events.wire.sse import ServerSentEvent


class Command(BaseCommand):
    help = "Subscribe to channels and print their events as they arrive (reconnects by itself)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="+", metavar="slug")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Server base URL.")
        parser.add_argument("--last-event-id", default="", help="Resume after this event id.")
        parser.add_argument("--token", help="Subscribe token for private channels.")
        parser.add_argument("--api-key", help="API key (Bearer) for non-public channels.")
        parser.add_argument("--count", type=int, default=0, help="Exit after this many events.")

    def handle(self, *args: Any, **options: Any) -> None:
        received = 0
        limit = options["count"]
        subscribed = False
        where = f"{', '.join(options['slugs'])} at {options['url']}"

        def show(event: ServerSentEvent) -> bool:
            nonlocal received, subscribed
            if event.event == OPEN_EVENT:
                # "subscribed" only moves the position; say so on stderr (stdout stays one
                # line per event), so a quiet channel does not look like a hung command.
                if not subscribed:
                    self.stderr.write(f"Listening to {where} (Ctrl-C to stop).")
                else:
                    self.stderr.write(f"Reconnected to {where}.")
                self.stderr.flush()
                subscribed = True
                return False
            received += 1
            self.stdout.write(f"{event.id}\t{event.event}\t{event.data}")
            self.stdout.flush()
            return bool(limit) and received >= limit

        try:
            listen(
                options["url"],
                options["slugs"],
                show,
                last_event_id=options["last_event_id"],
                token=options["token"],
                api_key=options["api_key"],
            )
        except ListenError as exc:
            hint = ""
            if str(exc).startswith("404") and not (options["token"] or options["api_key"]):
                # Private channels answer as if they did not exist (docs/security.md).
                hint = " (a private channel needs --token or --api-key)"
            raise CommandError(f"The server refused the subscription: {exc}{hint}") from exc
        except KeyboardInterrupt:
            return
