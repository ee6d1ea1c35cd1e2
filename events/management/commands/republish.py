from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from events.clients.listener import ListenError, follow
from events.clients.republish import Republisher, default_name
from events.exceptions import PushsiteError


class Command(BaseCommand):
    help = (
        "Subscribe to an upstream SSE feed and republish each of its events into a channel "
        "(resumes with Last-Event-ID, backs off, never republishes an upstream id twice)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="The upstream SSE feed, e.g. https://upstream.example/events/news/")
        parser.add_argument("slug", help="The local channel to publish into.")
        parser.add_argument(
            "--last-event-id",
            help="Start after this upstream id (default: where this republisher stopped, else the upstream's end).",
        )
        parser.add_argument("--event", help="Publish every event with this type instead of the upstream's.")
        parser.add_argument(
            "--name",
            help="Names this republisher in each message's publisher field (default: upstream host and path).",
        )
        parser.add_argument(
            "--header",
            action="append",
            default=[],
            metavar="'NAME: VALUE'",
            help="A header for the upstream request (e.g. 'Authorization: Bearer ...'); repeat for more.",
        )
        parser.add_argument(
            "--max-backoff", type=float, default=30.0, help="Longest wait between attempts (s)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        headers: dict[str, str] = {}
        for header in options["header"]:
            name, colon, value = header.partition(":")
            if not colon or not name.strip():
                raise CommandError(f"--header must look like 'Name: value', not {header!r}.")
            headers[name.strip()] = value.strip()
        republisher = Republisher(
            options["slug"], name=options["name"] or default_name(options["url"]), event=options["event"]
        )
        start = options["last_event_id"]
        if start is None:
            start = republisher.resume_point()
        self.stderr.write(f"Relaying {options['url']} into {options['slug']} after id {start or '(none)'}.")
        try:
            follow(
                options["url"],
                republisher.on_event,
                last_event_id=start,
                headers=headers,
                max_backoff=options["max_backoff"],
            )
        except ListenError as exc:
            raise CommandError(f"The upstream refused the subscription: {exc}") from exc
        except PushsiteError as exc:
            raise CommandError(exc.detail) from exc
        except DatabaseError as exc:
            # The event that failed was not recorded, so a restarted republisher
            # (e.g. by systemd) asks the upstream for it again.
            raise CommandError(
                f"The database failed ({exc}); run republish again: it resumes after the last event it stored."
            ) from exc
        except KeyboardInterrupt:
            return
