"""Creating and updating channels and keys: shared by commands, the admin and the demo."""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction

from events.models import ApiKey, Channel, Kind, StreamStorage, Visibility, new_epoch


def upsert_channel(
    slug: str,
    *,
    title: str | None = None,
    visibility: str | None = None,
    allowed_origins: Sequence[str] | None = None,
    stream_storage: str | None = None,
    kind: str | None = None,
    guests_may_post: bool | None = None,
) -> tuple[Channel, bool]:
    """Create the channel or update the given fields; validates like the admin does."""
    channel = Channel.objects.filter(slug=slug).first()
    created = channel is None
    if channel is None:
        channel = Channel(slug=slug)
    if title is not None:
        channel.title = title
    if visibility is not None:
        channel.visibility = visibility
    if allowed_origins is not None:
        channel.allowed_origins = list(allowed_origins)
    if stream_storage is not None:
        channel.stream_storage = stream_storage
    if kind is not None:
        channel.kind = kind
    if guests_may_post is not None:
        channel.guests_may_post = guests_may_post
    channel.full_clean()
    channel.save()
    return channel, created


def renew_epochs(slugs: Sequence[str] = ()) -> int:
    """Give the named channels (all when none are named) a new epoch; how many changed.

    After restoring a database from a backup: every saved position then names
    an old epoch and gets an explicit reset instead of resuming by number into
    messages the client never saw. Running servers notice within a poll interval.
    """
    channels = Channel.objects.all() if not slugs else Channel.objects.filter(slug__in=slugs)
    changed = 0
    with transaction.atomic():
        for pk in channels.values_list("pk", flat=True):
            changed += Channel.objects.filter(pk=pk).update(epoch=new_epoch())
    return changed


def create_api_key(
    name: str, channel_slugs: Sequence[str] = (), *, all_channels: bool = False
) -> tuple[ApiKey, str]:
    """A new key for ``channel_slugs``, or for every channel with ``all_channels``; and its one-time secret."""
    if all_channels == bool(channel_slugs):
        # An empty list never means "everything": the caller says which it is.
        raise ValidationError("A key is either for all channels or for named channels: give exactly one.")
    channels = list(Channel.objects.filter(slug__in=channel_slugs))
    missing = sorted(set(channel_slugs) - {c.slug for c in channels})
    if missing:
        raise ValidationError(f"No channel is called {missing[0]!r}.")
    with transaction.atomic():
        key, secret = ApiKey.generate(name)
        key.all_channels = all_channels
        key.full_clean()
        key.save()
        key.channels.set(channels)
    return key, secret


VISIBILITIES = [choice.value for choice in Visibility]
STREAM_STORAGES = [choice.value for choice in StreamStorage]
KINDS = [choice.value for choice in Kind]
