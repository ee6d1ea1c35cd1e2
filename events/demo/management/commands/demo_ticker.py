from __future__ import annotations

import random
import time
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

# A key that is refused now is refused on every retry: the ticker stops and says why.
REFUSED = (401, 403)
# demo.sh starts the ticker just before the server: until the server has answered once,
# for this long, a refused connection is the server still starting, not a complaint.
STARTUP_GRACE_SECONDS = 60.0


def score_update(home: int, away: int) -> dict[str, Any]:
    """The ticker's payload: a ``text`` that reads well anywhere, and the numbers for code."""
    return {"text": f"Reds {home} - {away} Blues", "match": "Reds v Blues", "home": home, "away": away}


class Command(BaseCommand):
    help = "Publish a made-up score to the 'scores' channel through the HTTP API every few seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--api-key", required=True)
        parser.add_argument("--every", type=float, default=3.0, help="Seconds between messages.")

    def handle(self, *args: Any, **options: Any) -> None:
        home, away = 0, 0
        endpoint = options["url"].rstrip("/") + "/api/channels/scores/messages"
        headers = {"Authorization": f"Bearer {options['api_key']}"}
        started = time.monotonic()
        answered = False
        with httpx.Client(timeout=5.0) as client:
            while True:
                if random.random() < 0.5:
                    home += 1
                else:
                    away += 1
                body = {"event": "score", "data": score_update(home, away)}
                try:
                    response = client.post(endpoint, json=body, headers=headers)
                except httpx.HTTPError as exc:
                    if answered or time.monotonic() - started >= STARTUP_GRACE_SECONDS:
                        self.stderr.write(f"demo ticker: {exc} (retrying)")
                else:
                    answered = True
                    if response.status_code in REFUSED:
                        raise CommandError(
                            f"demo ticker: the server refused the API key ({response.status_code} "
                            f"{response.text.strip()}): it was revoked (seed_demo makes a new one) or is wrong. "
                            "Stopping; stop the demo (Ctrl+C) and run scripts/demo.sh again to start a ticker with the new key."
                        )
                    if response.is_error:
                        self.stderr.write(
                            f"demo ticker: {response.status_code} {response.text.strip()} (retrying)"
                        )
                time.sleep(options["every"])
