"""The announcement workflow: every change that clients must see is a message on the channel.

Clients (the banner, events/static/events/announcements.js) keep a map of
announcements by id and apply each ``announcement`` event's ``action``:
published / updated (show or replace), retracted / expired (remove). Resuming
from Last-Event-ID therefore converges on the current state.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from events.announcements.models import Announcement, AnnouncementState
from events.models import Channel
from events.publish.store import publish
from events.wire.frames import isoformat_utc

logger = logging.getLogger(__name__)

ANNOUNCEMENT_EVENT = "announcement"


def payload(announcement: Announcement, action: str) -> dict[str, Any]:
    """What subscribers receive: the whole current state, so any one event is enough."""
    return {
        "action": action,
        "id": announcement.pk,
        "version": announcement.version,
        "title": announcement.title,
        "body": announcement.body,
        "level": announcement.level,
        "link": announcement.link,
        "publish_at": isoformat_utc(announcement.publish_at) if announcement.publish_at else None,
        "expires_at": isoformat_utc(announcement.expires_at) if announcement.expires_at else None,
    }


def _send(announcement: Announcement, action: str, by: str) -> None:
    publish(announcement.channel.slug, payload(announcement, action), ANNOUNCEMENT_EVENT, publisher=by)
    logger.info("Announcement %s %s on %s by %s", announcement.pk, action, announcement.channel.slug, by)


@transaction.atomic
def publish_now(announcement: Announcement, by: str) -> None:
    """Publish at once (a draft, a scheduled one, or a retracted one again)."""
    announcement.state = AnnouncementState.PUBLISHED
    announcement.publish_at = timezone.now()
    announcement.version += 1
    announcement.expiry_sent = False
    announcement.save()
    _send(announcement, "published", by)


def schedule(announcement: Announcement, when: datetime) -> None:
    """Publish at ``when``; until then clients see nothing."""
    announcement.state = AnnouncementState.SCHEDULED
    announcement.publish_at = when
    announcement.save()


@transaction.atomic
def save_edit(announcement: Announcement, by: str) -> None:
    """Save an edit; a published announcement changes in place on every page."""
    if announcement.state == AnnouncementState.PUBLISHED:
        announcement.version += 1
        announcement.expiry_sent = False
        announcement.save()
        _send(announcement, "updated", by)
    else:
        announcement.save()


@transaction.atomic
def retract(announcement: Announcement, by: str) -> None:
    """Take it back: every page removes it."""
    was_visible = announcement.state == AnnouncementState.PUBLISHED
    announcement.state = AnnouncementState.RETRACTED
    announcement.version += 1
    announcement.save()
    if was_visible:
        _send(announcement, "retracted", by)


def publish_due(now: datetime | None = None) -> int:
    """Publish scheduled announcements whose time has come, each exactly once across processes."""
    now = now or timezone.now()
    published = 0
    # Only on active channels: one whose channel is switched off cannot be published,
    # and waits (raising would hold up every other announcement on every tick).
    due = Announcement.objects.filter(
        state=AnnouncementState.SCHEDULED, publish_at__lte=now, channel__is_active=True
    )
    for pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            # Only the process whose conditional UPDATE changes the row
            # publishes; the message is stored in the same transaction.
            claimed = Announcement.objects.filter(pk=pk, state=AnnouncementState.SCHEDULED).update(
                state=AnnouncementState.PUBLISHED, version=F("version") + 1
            )
            if claimed:
                announcement = Announcement.objects.select_related("channel").get(pk=pk)
                _send(announcement, "published", "scheduler")
                published += 1
    return published


def expire_due(now: datetime | None = None) -> int:
    """Tell clients to hide published announcements past their expiry, once each."""
    now = now or timezone.now()
    expired = 0
    due = Announcement.objects.filter(
        state=AnnouncementState.PUBLISHED, expiry_sent=False, expires_at__lte=now, channel__is_active=True
    )
    for pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            claimed = Announcement.objects.filter(pk=pk, expiry_sent=False).update(expiry_sent=True)
            if claimed:
                announcement = Announcement.objects.select_related("channel").get(pk=pk)
                _send(announcement, "expired", "scheduler")
                expired += 1
    return expired


def live_on(channel: Channel, now: datetime | None = None) -> QuerySet[Announcement]:
    """Announcements a page opened now should show."""
    now = now or timezone.now()
    return (
        Announcement.objects.filter(channel=channel, state=AnnouncementState.PUBLISHED)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-publish_at")
    )
