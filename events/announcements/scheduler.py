"""Scheduled announcements go out, and expired ones come down, on every process's tick."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.dispatch import receiver

from events.announcements import workflow
from events.signals import tick


def run_schedule() -> None:
    workflow.publish_due()
    workflow.expire_due()


@receiver(tick, dispatch_uid="pushsite-announcement-scheduler")
async def run_on_tick(sender: Any, now: float, **kwargs: Any) -> None:
    # Every process runs it; publish_due/expire_due claim each announcement
    # with a conditional UPDATE, so it goes out once.
    await database_sync_to_async(run_schedule)()
