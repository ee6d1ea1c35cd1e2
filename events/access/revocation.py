"""Deciding which open streams' readers lost access while connected.

Every stream remembers what let it in (its :class:`Access`). Every
``PUSHSITE_REVOCATION_SECONDS`` the access sweep (events/deliver/access_sweep.py)
re-checks here, in one batch, the streams on channels that are not public: a logged-out or deactivated user, a member
removed from a private channel, a revoked API key (also the key that minted
the stream's token), or a channel made private ends the stream ("access
revoked"); expired tokens end it on the second
(events/deliver/stream.py). The reconnect is then refused, so replay never hands out
history the reader may no longer read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User

from events.access.auth import Reader, TokenGrant, check_read, user_from_session_key
from events.exceptions import PushsiteError
from events.models import ApiKey, Channel


@dataclass(frozen=True)
class Access:
    """The credentials a stream was opened with (a session, a token grant, an API key)."""

    session_key: str | None
    token: TokenGrant | None
    key_id: int | None


def revoked(checks: Iterable[tuple[Access, frozenset[int]]]) -> set[tuple[Access, frozenset[int]]]:
    """Which (access, channel ids) pairs no longer allow reading every one of those channels."""
    pairs = set(checks)
    channel_ids = {channel_id for _, ids in pairs for channel_id in ids}
    channels = {c.pk: c for c in Channel.objects.filter(pk__in=channel_ids, is_active=True)}
    key_ids = {access.key_id for access, _ in pairs if access.key_id is not None}
    key_ids |= {access.token.key_id for access, _ in pairs if access.token and access.token.key_id}
    keys = {
        k.pk: k for k in ApiKey.objects.filter(pk__in=key_ids, is_active=True).prefetch_related("channels")
    }
    now = time.time()
    users: dict[str | None, User | AnonymousUser] = {}
    lost: set[tuple[Access, frozenset[int]]] = set()
    for access, ids in pairs:
        if access.session_key not in users:
            users[access.session_key] = user_from_session_key(access.session_key)
        reader = Reader(user=users[access.session_key])
        if access.key_id is not None:
            reader.key = keys.get(access.key_id)
        # An expired token grants nothing here either (the tick ends a stream
        # that needed it; one that did not must not keep it as a fallback).
        if access.token is not None and access.token.expires_at > now:
            reader.grant = access.token
            if access.token.key_id is not None:
                reader.minting_key = keys.get(access.token.key_id)
        try:
            for channel_id in ids:
                channel = channels.get(channel_id)
                if channel is None:
                    raise PushsiteError("channel gone")
                check_read(channel, reader)
        except PushsiteError:
            lost.add((access, ids))
    return lost
