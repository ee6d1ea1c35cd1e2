from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.models import Channel
from events.provisioning import renew_epochs


class Command(BaseCommand):
    help = (
        "Give channels a new epoch (all channels unless named), for instance after restoring "
        "the database from a backup: every saved stream position then gets an explicit "
        "pushsite.reset instead of resuming into messages it never saw."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", help="Channels to renew (default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        slugs = options["slugs"]
        unknown = sorted(
            set(slugs) - set(Channel.objects.filter(slug__in=slugs).values_list("slug", flat=True))
        )
        if unknown:
            raise CommandError(f"No channel is called {unknown[0]!r}.")
        count = renew_epochs(slugs)
        self.stdout.write(f"{count} channel(s) have a new epoch.")
