"""Who may publish and who may subscribe: API keys, sessions and signed tokens."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.utils import timezone
from django.utils.module_loading import import_string

from events.conf import conf
from events.exceptions import ChannelHidden, ChannelNotFound, NotAuthenticated, PermissionDenied, TokenExpired
from events.models import ApiKey, Channel, Visibility

TOKEN_SALT = "pushsite.subscribe-token"
BEARER = "bearer "
LAST_USED_RESOLUTION = timedelta(minutes=1)


# --- API keys -----------------------------------------------------------------


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header, if there is one."""
    if not authorization:
        return None
    if not authorization.lower().startswith(BEARER):
        raise NotAuthenticated("The Authorization header must be 'Bearer <api key>'.")
    return authorization[len(BEARER) :].strip()


def authenticate_api_key(secret: str) -> ApiKey:
    """The active key whose secret this is; raises NotAuthenticated otherwise."""
    prefix = ApiKey.prefix_of(secret)
    key = ApiKey.objects.active().filter(prefix=prefix).first() if prefix is not None else None
    if key is None or not key.matches(secret):
        raise NotAuthenticated("The API key is not valid, or it has been revoked.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        # Written at most once a minute per key, not on every publish.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def key_allows(key: ApiKey, channel: Channel) -> bool:
    scoped_ids = set(key.channels.values_list("pk", flat=True))
    return not scoped_ids or channel.pk in scoped_ids


def require_key_for(key: ApiKey, channel: Channel) -> None:
    if not key_allows(key, channel):
        raise PermissionDenied(f"This API key may not use the channel {channel.slug!r}.")


# --- subscribe tokens -----------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """What a verified subscribe token allows."""

    channels: frozenset[str]
    expires_at: float
    subject: str = ""


def mint_token(channels: Iterable[Channel | str], *, ttl: int | None = None, subject: str = "") -> str:
    """A signed token that lets its holder subscribe to ``channels`` for ``ttl`` seconds."""
    max_age = int(conf.TOKEN_MAX_AGE_SECONDS)
    lifetime = max_age if ttl is None else min(int(ttl), max_age)
    slugs = sorted({c.slug if isinstance(c, Channel) else c for c in channels})
    payload = {"ch": slugs, "exp": int(time.time()) + lifetime, "sub": subject}
    return signing.dumps(payload, salt=TOKEN_SALT, compress=True)


def verify_token(token: str) -> TokenGrant:
    """The grant in ``token``; raises PermissionDenied when it is tampered or expired."""
    try:
        payload: Any = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature as exc:
        raise PermissionDenied("The token is not valid (tampered, or signed for something else).") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("ch"), list):
        raise PermissionDenied("The token is not valid.")
    expires_at = float(payload.get("exp", 0))
    if expires_at <= time.time():
        raise TokenExpired("The token has expired; ask the site for a fresh one.")
    return TokenGrant(
        channels=frozenset(str(slug) for slug in payload["ch"]),
        expires_at=expires_at,
        subject=str(payload.get("sub", "")),
    )


# --- sessions (the stream path bypasses Django's middleware) --------------------


def session_from_key(session_key: str | None) -> SessionBase | None:
    """The session store for a session cookie's value (loaded lazily), or None."""
    if not session_key:
        return None
    store_class = import_string(settings.SESSION_ENGINE + ".SessionStore")
    session: SessionBase = store_class(session_key)
    return session


def user_from_session(session: SessionBase | None) -> AbstractBaseUser | AnonymousUser:
    if session is None:
        return AnonymousUser()
    # django.contrib.auth.get_user only needs request.session; it also checks
    # the session hash, so a changed password or a logout ends access.
    return get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]


def user_from_session_key(session_key: str | None) -> AbstractBaseUser | AnonymousUser:
    return user_from_session(session_from_key(session_key))


# --- reading a channel -------------------------------------------------------------


@dataclass
class Reader:
    """Whoever is asking to read: a session user, a token, an API key, or nobody."""

    user: AbstractBaseUser | AnonymousUser = field(default_factory=AnonymousUser)
    grant: TokenGrant | None = None
    key: ApiKey | None = None


def unknown_channel(slug: str, *, exists: bool = False) -> ChannelNotFound:
    """The refusal for a channel that does not exist, or that the reader may not know exists.

    Both say the same; ``ChannelHidden`` is also a ``PermissionDenied`` for code
    that asks whether a reader may read, never for what the client sees.
    """
    refusal = ChannelHidden if exists else ChannelNotFound
    return refusal(f"No active channel is called {slug[:60]!r}.")


def check_read(channel: Channel, reader: Reader) -> None:
    """Raise unless ``reader`` may subscribe to (or read the history of) ``channel``.

    A reader without a grant for a non-public channel gets exactly the refusal
    of a channel that does not exist (404, same detail): outsiders cannot learn
    which private channels exist (docs/security.md).
    """
    if channel.visibility == Visibility.PUBLIC:
        return
    if reader.grant is not None and channel.slug in reader.grant.channels:
        return
    if reader.key is not None and key_allows(reader.key, channel):
        return
    user = reader.user
    if user.is_authenticated and user.is_active:
        if channel.visibility == Visibility.AUTHENTICATED:
            return
        if user.is_staff or channel.members.filter(pk=user.pk).exists():
            return
    raise unknown_channel(channel.slug, exists=True)


def readable_channels(slugs: list[str], reader: Reader) -> list[Channel]:
    """The active channels named by ``slugs`` that ``reader`` may read, in order.

    The first slug that is unknown *or* unreadable is refused, in the order
    asked, so a refusal never depends on whether a later channel exists.
    Credentials must be checked before this (their errors name no channel).
    """
    found = {c.slug: c for c in Channel.objects.active().filter(slug__in=slugs)}
    channels = []
    for slug in slugs:
        channel = found.get(slug)
        if channel is None:
            raise unknown_channel(slug)
        check_read(channel, reader)
        channels.append(channel)
    return channels


def active_channels(slugs: list[str]) -> list[Channel]:
    """The active channels named by ``slugs``, in that order; 404 for any other."""
    found = {c.slug: c for c in Channel.objects.active().filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in found]
    if missing:
        raise unknown_channel(missing[0])
    return [found[slug] for slug in slugs]
