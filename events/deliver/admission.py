"""Database admission in batches: the streams opening together share one thread hop and one channel query.

A stream the channel directory cannot admit (events/deliver/directory.py: any
cursor, rewind or credential, a private or cold channel) is checked against the
database by ``authorize`` (events/deliver/consumer.py). After a restart every
client comes back at once with ``Last-Event-ID``, so every open is such an
admission: one thread hop and one query each, one after another on the database
thread, paced the reconnect storm at about 200 opens per second
(docs/performance.md, issue 16).

Here the admissions asked for within one loop turn, or while the previous batch is
in the database thread, run in one hop (events/deliver/batching.py): one query reads
the active channels of every slug they name, then each request is authorised on its
own against those rows, exactly as alone: its credentials (an API key, a token and
the key that minted it, a session), its channels' visibility and membership, the
origin, the cursor. Each gets its own answer: one refused or invalid request is
refused with its own error (the same 4xx as alone) and changes nothing for the
others; a database that fails the shared query is every request's 503.
Everything before admission (the per-address stream limits, the Host check, the
request's parsing) stays per request, on the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from events.deliver.batching import Batcher
from events.models import Channel

# Requests in one hop, at most: with at most MAX_CHANNELS_PER_STREAM slugs each, the
# shared query names a few thousand slugs at most (under SQLite's 32,766 parameters).
MAX_BATCH = 256


class NamesChannels(Protocol):
    @property
    def slugs(self) -> list[str]: ...


RequestT = TypeVar("RequestT", bound=NamesChannels)
AdmittedT = TypeVar("AdmittedT")


class BatchedAdmission(Generic[RequestT, AdmittedT]):
    """``authorize(request, active)`` for many requests in one database hop; awaited per request."""

    __slots__ = ("_authorize", "_batcher")

    def __init__(self, authorize: Callable[[RequestT, Mapping[str, Channel]], AdmittedT]) -> None:
        self._authorize = authorize
        self._batcher: Batcher[RequestT, AdmittedT] = Batcher(self.authorize_all, max_size=MAX_BATCH)

    async def __call__(self, request: RequestT) -> AdmittedT:
        return await self._batcher(request)

    def authorize_all(self, requests: list[RequestT]) -> list[AdmittedT | Exception]:
        """Each request's admission or refusal (in the database thread), with one read of their channels."""
        slugs = {slug for request in requests for slug in request.slugs}
        active = {channel.slug: channel for channel in Channel.objects.active().filter(slug__in=slugs)}
        answers: list[AdmittedT | Exception] = []
        for request in requests:
            try:
                answers.append(self._authorize(request, active))
            except Exception as error:  # its own answer: a refusal (4xx), a failed query (503), a bug
                answers.append(error)
        return answers
