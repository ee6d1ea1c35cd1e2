"""Keep-alives, stuck-write eviction and token expiry for every open stream, on the tick."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver

from events.conf import conf
from events.signals import tick

if TYPE_CHECKING:
    from events.deliver.relay import Relay


@receiver(tick, dispatch_uid="pushsite-heartbeat")
async def beat(sender: Relay, now: float, **kwargs: Any) -> None:
    heartbeat = conf.HEARTBEAT_SECONDS
    send_timeout = conf.SEND_TIMEOUT_SECONDS
    wall_clock = time.time()
    for stream in tuple(sender.streams):
        stream.tick(now, heartbeat, send_timeout, wall_clock)
