"""What one open stream holds in its process, given back exactly once when it ends.

A stream takes a slot in its address's count (and, with Redis, a lease in the
count shared by every process): a subscription and a streaming publish alike
(events/publish/ingest.py), both held open by one client; features attach things to it
(``signals.stream_authorized``). On the portable path the request's task
(events/deliver/endpoint.py) owns the stream to its end; on a direct connection
(events/deliver/direct.py) that task ends once the stream is open, so these
travel with the stream instead of with the task, and whichever ends first (a
refusal before the stream exists, or the stream's close) gives them back.
"""

from __future__ import annotations

import asyncio

from events.access import stream_slots
from events.conf import conf
from events.deliver.relay import get_relay
from events.exceptions import RateLimited, ServiceUnavailable
from events.runtime.tasks import detached
from events.signals import StreamAttachment

_giving_back: set[asyncio.Task[None]] = set()


class Holdings:
    """One stream's address slot, shared lease and feature attachments."""

    __slots__ = ("address", "attachments", "lease")

    def __init__(self) -> None:
        # The address whose slot is held in ``relay.streams_per_ip``, and its shared lease.
        self.address: str | None = None
        self.lease: str | None = None
        self.attachments: list[StreamAttachment] = []

    def take_slot(self, address: str) -> None:
        """Take one of ``address``'s stream slots in this process, or refuse; held until :meth:`release`.

        The check and the count are one synchronous step (issue 13): a burst of
        connects from one address cannot all pass the check while the first ones are
        still being authorised, which is what happened when the count came later.
        """
        relay = get_relay()
        if relay.draining:
            raise ServiceUnavailable("This server is shutting down; reconnect to reach another one.")
        limit = conf.MAX_STREAMS_PER_IP
        if relay.streams_per_ip[address] >= limit:
            raise RateLimited(
                f"This address already holds {_open_streams(limit)} on this server; close some first."
            )
        relay.streams_per_ip[address] += 1
        self.address = address

    async def take_shared_slot(self) -> None:
        """The same cap across every server process, when they share Redis (events/access/stream_slots.py)."""
        address = self.address
        assert address is not None, "take_slot first"
        limit = conf.MAX_STREAMS_PER_IP
        allowed, self.lease = await stream_slots.take(address, limit)
        if not allowed:
            raise RateLimited(
                f"This address already holds {_open_streams(limit)} on this site's servers; close some first."
            )

    def attach(self, attachments: list[StreamAttachment]) -> None:
        """Open the features' attachments; they are closed by :meth:`release`."""
        self.attachments = attachments
        for attachment in attachments:
            attachment.open()

    def release(self) -> None:
        """Give everything back (idempotent)."""
        address, self.address = self.address, None
        lease, self.lease = self.lease, None
        if address is not None:
            if lease is not None:
                task = detached(stream_slots.give_back(address, lease))
                # The loop keeps only weak references to tasks: hold this one to its end.
                _giving_back.add(task)
                task.add_done_callback(_giving_back.discard)
            counts = get_relay().streams_per_ip
            counts[address] -= 1
            if counts[address] <= 0:
                del counts[address]
        attachments, self.attachments = self.attachments, []
        for attachment in attachments:
            attachment.close()


def _open_streams(count: int) -> str:
    return f"{count} open stream" if count == 1 else f"{count} open streams"
