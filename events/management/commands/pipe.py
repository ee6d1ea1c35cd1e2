from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.exceptions import PushsiteError
from events.models import Channel
from events.publish.stream_publication import DONE, FAILED, StreamPublication
from events.publish.validate import data_or_text


class Command(BaseCommand):
    help = (
        "Publish each line of standard input the moment it is written, as one stream "
        "(stream id, numbered parts), ending with a done event: some-command | manage.py pipe <slug>."
    )

    # call_command("pipe", ..., stdin=...) reads from that instead (tests).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--event", default="message", help="Event type of every part (default: message).")
        parser.add_argument("--text", action="store_true", help="Send every line as text, even valid JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        slug = options["slug"]
        channel = Channel.objects.active().filter(slug=slug).first()
        if channel is None:
            raise CommandError(f"No active channel is called {slug!r}.")
        stream = StreamPublication(channel, publisher="command:pipe")
        self.stderr.write(f"Streaming standard input into {slug} as stream {stream.id}.")
        self.stderr.flush()
        stdin = options.get("stdin") or sys.stdin
        try:
            # readline, one line at a time: each is published as soon as it is complete.
            for line in iter(stdin.readline, ""):
                text = line.removesuffix("\n").removesuffix("\r")
                stream.part(text if options["text"] else data_or_text(text), event=options["event"])
        except PushsiteError as exc:
            stream.end(FAILED, exc.detail)
            raise CommandError(f"Stream {stream.id} failed after {stream.parts} parts: {exc.detail}") from exc
        except KeyboardInterrupt:
            stream.end(FAILED, "The pipe was interrupted.")
            raise CommandError(f"Stream {stream.id} interrupted after {stream.parts} parts.") from None
        stream.end(DONE)
        parts = "1 part" if stream.parts == 1 else f"{stream.parts} parts"
        self.stdout.write(f"Streamed {parts} into {slug} (stream {stream.id}, done).")
