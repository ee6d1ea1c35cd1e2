"""Per-process periodic work started with the relay: the announcement scheduler and the census."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async

from . import announcements, census, opssamples
from .metrics import stats

if TYPE_CHECKING:
    from .relay import Relay

logger = logging.getLogger(__name__)

SCHEDULER_SECONDS = 1.0
CENSUS_SECONDS = 5.0


def run_schedule() -> None:
    announcements.publish_due()
    announcements.expire_due()


async def run(relay: Relay) -> None:
    """Forever: scheduled announcements every second, this process's census every few seconds."""
    last_census = 0.0
    while True:
        await asyncio.sleep(SCHEDULER_SECONDS)
        try:
            opssamples.recorder.sample(time.time(), stats.slow_reader_evictions, len(relay.streams))
            await database_sync_to_async(run_schedule)()
            if time.monotonic() - last_census >= CENSUS_SECONDS:
                last_census = time.monotonic()
                per_channel = {feed.slug: len(feed.streams) for feed in relay.feeds.values()}
                await database_sync_to_async(census.report)(len(relay.streams), per_channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Periodic work failed; retrying in %ss.", SCHEDULER_SECONDS)
