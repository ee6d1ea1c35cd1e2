"""What the core announces, for the features around it to plug into.

The core (publish -> store -> relay -> stream) imports no feature; chat,
announcements, widgets and operations connect to these signals in their
``AppConfig.ready``.
"""

from __future__ import annotations

from typing import Protocol

from django.dispatch import Signal

# Once a second in every server process, sent by the process's relay
# (``sender``) with ``now`` (``time.monotonic()``). Receivers are async and run
# side by side; one that raises is logged and runs again on the next tick.
# Work that is due less often keeps its own pace (events.runtime.tick.Every).
tick = Signal()

# Sent in the database thread once a subscriber has been allowed in, with
# ``channels`` (the Channel rows of the stream), ``user`` and ``session``. A
# receiver may return a StreamAttachment: it is opened with the stream and
# closed when the stream ends (chat presence is one). Sent on every stream open:
# its receivers are looked up once per sender, not on every send (issue 16).
stream_authorized = Signal(use_caching=True)

# Sent by the channel's admin change page with ``channel`` and ``request``;
# each receiver returns a dict of extra template context (the widget snippets).
channel_admin_context = Signal()


class StreamAttachment(Protocol):
    """Something a feature keeps for as long as one stream is open."""

    def open(self) -> None: ...

    def close(self) -> None: ...
