"""Following SSE feeds from Python: reconnects with Last-Event-ID and backoff (listen, republish)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode

import httpx

from events.wire.sse import Decoder, ServerSentEvent

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
    """Call ``on_event`` for every event of Pushsite channels until it returns True; reconnects forever otherwise."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    follow(
        stream_url(base_url, slugs, token),
        on_event,
        last_event_id=last_event_id,
        headers=headers,
        max_backoff=max_backoff,
    )


def follow(
    url: str,
    on_event: Callable[[ServerSentEvent], bool | None],
    *,
    last_event_id: str = "",
    headers: Mapping[str, str] | None = None,
    max_backoff: float = 30.0,
) -> None:
    """Call ``on_event`` for every event of any SSE feed until it returns True.

    Reconnects forever, with ``Last-Event-ID`` and jittered exponential backoff
    from the feed's ``retry:`` hint; an answer that will not change (a 4xx other
    than 429) raises ListenError.
    """
    decoder = Decoder()
    decoder.last_event_id = last_event_id
    failures = 0
    timeout = httpx.Timeout(10.0, read=120.0)
    with httpx.Client(timeout=timeout) as client:
        while True:
            # A connection that broke mid-event leaves half an event behind:
            # start each connection clean, keeping only the resume point and hint.
            decoder = _fresh_decoder(decoder)
            request_headers = {"Accept": "text/event-stream", **(headers or {})}
            if decoder.last_event_id:
                request_headers["Last-Event-ID"] = decoder.last_event_id
            try:
                with client.stream("GET", url, headers=request_headers) as response:
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


def _fresh_decoder(previous: Decoder) -> Decoder:
    decoder = Decoder()
    decoder.last_event_id = previous.last_event_id
    decoder.retry = previous.retry
    return decoder
