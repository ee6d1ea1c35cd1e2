from __future__ import annotations

import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.provisioning import KINDS, STREAM_STORAGES, VISIBILITIES, upsert_channel


class Command(BaseCommand):
    help = "Create a channel, or update the given fields of an existing one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--title")
        parser.add_argument("--visibility", choices=VISIBILITIES)
        parser.add_argument("--kind", choices=KINDS, help="feed (default) or chat (a chat room).")
        parser.add_argument(
            "--guests-may-post",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Chat rooms: visitors who are not logged in may post with a nickname.",
        )
        parser.add_argument(
            "--stream-storage",
            choices=STREAM_STORAGES,
            help="keep (default): every part of a streamed publish is stored; "
            "fold: parts are live-only and the stream is stored once, as its end event.",
        )
        parser.add_argument(
            "--allow-origin",
            action="append",
            dest="allowed_origins",
            metavar="ORIGIN",
            help="An origin (https://site.example) whose pages may subscribe; repeat for more.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            channel, created = upsert_channel(
                options["slug"],
                title=options["title"],
                visibility=options["visibility"],
                allowed_origins=options["allowed_origins"],
                stream_storage=options["stream_storage"],
                kind=options["kind"],
                guests_may_post=options["guests_may_post"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        verb = "Created" if created else "Updated"
        room = " It is a chat room." if channel.is_chat else ""
        self.stdout.write(f"{verb} channel {channel.slug} ({channel.visibility}).{room}")
