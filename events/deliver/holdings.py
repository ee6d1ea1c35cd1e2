"""What one open stream holds in its process, given back exactly once when it ends.

A stream takes a slot in its address's count (and, with Redis, a lease in the
count shared by every process), and features attach things to it
(``signals.stream_authorized``). On the portable path the request's task
(events/deliver/endpoint.py) owns the stream to its end; on a direct connection
(events/deliver/direct.py) that task ends once the stream is open, so these
travel with the stream instead of with the task, and whichever ends first (a
refusal before the stream exists, or the stream's close) gives them back.
"""

from __future__ import annotations

import asyncio

from events.access import stream_slots
from events.deliver.relay import get_relay
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
        """Count one more stream for ``address`` in this process (the caller checked the cap)."""
        get_relay().streams_per_ip[address] += 1
        self.address = address

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
