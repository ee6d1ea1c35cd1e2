"""Scheduled announcements go out, and expired ones come down, on every process's tick."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from events.announcements import workflow
from events.runtime.bookkeeping import Job, off_path
from events.signals import tick

job = Job("Announcement scheduler")


def run_schedule() -> None:
    workflow.publish_due()
    workflow.expire_due()


@receiver(tick, dispatch_uid="pushsite-announcement-scheduler")
async def run_on_tick(sender: Any, now: float, **kwargs: Any) -> None:
    # Every process runs it; publish_due/expire_due claim each announcement
    # with a conditional UPDATE, so it goes out once.
    # Off the data path's database thread; a run still going skips this turn (issue 15).
    async def run() -> None:
        await off_path(run_schedule)

    job.start(run)
