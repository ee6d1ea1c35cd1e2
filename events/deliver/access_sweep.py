"""Ending open streams whose reader lost access, every PUSHSITE_REVOCATION_SECONDS (on the tick).

Only streams on non-public channels are checked, in one batch per sweep
(events/access/revocation.py decides who lost what).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.dispatch import receiver

from events.access import revocation
from events.access.revocation import Access
from events.conf import conf
from events.runtime.bookkeeping import Job, off_path
from events.runtime.tick import Every
from events.signals import tick

if TYPE_CHECKING:
    from events.deliver.relay import Relay
    from events.deliver.stream import Stream

_pace = Every(0)
job = Job("Access sweep")


@receiver(tick, dispatch_uid="pushsite-access-sweep")
async def close_revoked(sender: Relay, now: float, **kwargs: Any) -> None:
    """End streams whose reader may no longer read one of their non-public channels."""
    if job.busy or not _pace.due(now, conf.REVOCATION_SECONDS):
        return
    restricted = {channel_id for channel_id, feed in sender.feeds.items() if feed.visibility != "public"}
    if not restricted:
        return
    checks: dict[Stream, tuple[Access, frozenset[int]]] = {}
    for stream in sender.streams:
        ids = frozenset(channel.id for channel in stream.channels if channel.id in restricted)
        if ids and stream.access is not None:
            checks[stream] = (stream.access, ids)
    if not checks:
        return

    async def sweep() -> None:
        # Off the data path's database thread (issue 15): stream opens never wait on it.
        lost = await off_path(revocation.revoked, set(checks.values()))
        for stream, check in checks.items():
            if check in lost and not stream.closed:
                stream.close("access revoked")

    job.start(sweep)
