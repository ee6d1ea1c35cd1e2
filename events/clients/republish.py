"""Republishing an upstream SSE feed into a local channel, each upstream event once (``manage.py republish``).

The upstream connection is events/clients/listener.py's: it resumes with
``Last-Event-ID`` and backs off between attempts. On top of that:

* an upstream that replays what it already sent (it ignored ``Last-Event-ID``,
  or restarted and sends its recent history again) is not republished twice:
  the ids of recently published events are remembered;
* the upstream id of each message is kept in its ``publisher`` field
  (``relay:<name>#<id>``), so a restarted relay resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from urllib.parse import urlsplit

from events.exceptions import InvalidInput, PayloadTooLarge
from events.models import Message
from events.publish.store import publish
from events.publish.validate import data_or_text, validate_event_type
from events.wire import frames
from events.wire.sse import ServerSentEvent

logger = logging.getLogger(__name__)

PUBLISHER_FIELD_LENGTH = 200
MAX_NAME_LENGTH = 100
REMEMBERED_IDS = 10_000
STREAM_CONTROL_EVENTS = frozenset({frames.OPEN_EVENT, frames.CLOSE_EVENT})


def default_name(url: str) -> str:
    """The upstream's host and path: names the relay in ``publisher`` (never its query: tokens)."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path)[:MAX_NAME_LENGTH]


class RecentIds:
    """The last ``capacity`` ids seen, for membership tests (bounded memory)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def add(self, item: str) -> None:
        self._ids[item] = None
        self._ids.move_to_end(item)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class Republisher:
    """Publishes each upstream event into ``slug``, once, with its upstream id recorded."""

    def __init__(self, slug: str, *, name: str, event: str | None = None) -> None:
        self.slug = slug
        self.name = name[:MAX_NAME_LENGTH]
        self.event = event
        self.published = 0
        self.skipped = 0
        self.seen = RecentIds(REMEMBERED_IDS)

    @property
    def _prefix(self) -> str:
        return f"relay:{self.name}#"

    def resume_point(self) -> str:
        """The upstream id of the last event this relay published into the channel ("" if none)."""
        publisher = (
            Message.objects.filter(channel__slug=self.slug, publisher__startswith=self._prefix)
            .order_by("-sequence")
            .values_list("publisher", flat=True)
            .first()
        )
        upstream_id = publisher[len(self._prefix) :] if publisher else ""
        if upstream_id:
            self.seen.add(upstream_id)
        return upstream_id

    def on_event(self, event: ServerSentEvent) -> None:
        """Publish one upstream event, unless it was published already or cannot be."""
        if event.event in STREAM_CONTROL_EVENTS:
            # An upstream Pushsite's "subscribed" / "ending" markers are about that
            # connection, not messages: never relayed, even under --event.
            logger.debug("Upstream %s not relayed (stream control).", event.event)
            return
        if event.has_id and event.id in self.seen:
            self.skipped += 1
            logger.info("Upstream event %r was already relayed; skipped.", event.id)
            return
        event_type = self.event or event.event
        try:
            validate_event_type(event_type)
        except InvalidInput as exc:
            # Reserved types (an upstream Pushsite's pushsite.reset) describe the
            # upstream's own stream, not this channel.
            self.skipped += 1
            logger.warning("Upstream event %r not relayed: %s", event.id, exc.detail)
            return
        publisher = f"relay:{self.name}"
        recorded = self._prefix + event.id
        if event.has_id and len(recorded) <= PUBLISHER_FIELD_LENGTH:
            publisher = recorded
        try:
            message = publish(self.slug, data_or_text(event.data), event_type, publisher=publisher)
        except (InvalidInput, PayloadTooLarge) as exc:
            self.skipped += 1
            logger.warning("Upstream event %r not relayed: %s", event.id, exc.detail)
            return
        if event.has_id:
            self.seen.add(event.id)
        self.published += 1
        logger.debug("Relayed upstream %r as %s#%s.", event.id, self.slug, message.sequence)
