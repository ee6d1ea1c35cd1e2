"""Releasing guest nicknames long out of use (claims: events/chat/rules.py ``claim_nickname``).

A guest's nickname is held for that guest in a room (nobody else may post under
it there), also after the guest moves on to another name, so an old message's
name never passes to someone else. A claim is released once it has been idle
for ``PUSHSITE_CHAT_NICKNAME_HOLD_DAYS`` and no message the room still keeps
carries the name; the prune runs on the tick, off the data path, a bounded
batch per run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Exists, OuterRef, Value
from django.db.models.functions import Concat
from django.dispatch import receiver
from django.utils import timezone

from events.chat.conf import chat_conf
from events.chat.models import ChatNickname
from events.models import Message
from events.runtime.bookkeeping import Job, off_path
from events.signals import tick

# Claims released per run, and the least time between runs in one process.
PRUNE_BATCH = 500
PRUNE_EVERY_SECONDS = 3600.0


def release_idle(limit: int = PRUNE_BATCH) -> int:
    """Release up to ``limit`` claims idle past the hold that no kept message carries; how many went."""
    idle_since = timezone.now() - timedelta(days=chat_conf.CHAT_NICKNAME_HOLD_DAYS)
    carried = Message.objects.filter(
        channel_id=OuterRef("channel_id"), publisher=Concat(Value("guest:"), OuterRef("name"))
    )
    idle = (
        ChatNickname.objects.filter(last_used_at__lt=idle_since)
        .exclude(Exists(carried))
        .values_list("pk", flat=True)[:limit]
    )
    deleted, _ = ChatNickname.objects.filter(pk__in=list(idle)).delete()
    return deleted


job = Job("Chat nickname release")
_last_run = 0.0


@receiver(tick, dispatch_uid="pushsite-chat-nicknames")
async def release_on_tick(sender: Any, now: float, **kwargs: Any) -> None:
    global _last_run
    if now - _last_run < PRUNE_EVERY_SECONDS:
        return
    _last_run = now

    async def run() -> None:
        await off_path(release_idle)

    job.start(run)
