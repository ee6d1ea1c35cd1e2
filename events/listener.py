"""A terminal subscriber: follows streams and reconnects with Last-Event-ID."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import httpx

from .sse import Decoder, ServerSentEvent

logger = logging.getLogger(__name__)

# Answers worth retrying; any other 4xx is final (wrong channel, no access).
RETRYABLE_STATUSES = {429, 502, 503, 504}


class ListenError(Exception):
    """The server refused the subscription for good (401, 403, 404, ...)."""


def stream_url(base_url: str, slugs: Sequence[str], token: str | None = None) -> str:
    base = base_url.rstrip("/")
    query: list[tuple[str, str]] = []
    if len(slugs) == 1:
        path = f"{base}/events/{slugs[0]}/"
    else:
        path = f"{base}/events/"
        query.extend(("channel", slug) for slug in slugs)
    if token:
        query.append(("token", token))
    return f"{path}?{urlencode(query)}" if query else path


def listen(
    base_url: str,
    slugs: Sequence[str],
    on_event: Callable[[ServerSentEvent], bool | None],
    *,
    last_event_id: str = "",
    token: str | None = None,
    api_key: str | None = None,
    max_backoff: float = 30.0,
) -> None:
    """Call ``on_event`` for every event until it returns True; reconnects forever otherwise."""
    url = stream_url(base_url, slugs, token)
    decoder = Decoder()
    decoder.last_event_id = last_event_id
    failures = 0
    timeout = httpx.Timeout(10.0, read=120.0)
    with httpx.Client(timeout=timeout) as client:
        while True:
            headers = {"Accept": "text/event-stream"}
            if decoder.last_event_id:
                headers["Last-Event-ID"] = decoder.last_event_id
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code != 200:
                        body = response.read().decode(errors="replace")
                        if response.status_code not in RETRYABLE_STATUSES:
                            raise ListenError(f"{response.status_code}: {body}")
                        raise httpx.TransportError(f"{response.status_code}: {body}")
                    failures = 0
                    for text in response.iter_text():
                        for event in decoder.feed(text):
                            if on_event(event):
                                return
            except httpx.TransportError as exc:
                logger.warning("Stream interrupted: %s", exc)
            failures += 1
            base = (decoder.retry or 2000) / 1000
            delay = min(max_backoff, base * 2 ** min(failures - 1, 6)) * random.uniform(0.5, 1.0)
            logger.info("Reconnecting in %.1fs after id %r", delay, decoder.last_event_id)
            time.sleep(delay)
