"""Who may publish and who may subscribe: API keys, sessions and signed tokens."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.utils import timezone
from django.utils.module_loading import import_string

from events.conf import conf
from events.exceptions import ChannelHidden, ChannelNotFound, NotAuthenticated, PermissionDenied, TokenExpired
from events.models import ApiKey, Channel, Visibility

TOKEN_SALT = "pushsite.subscribe-token"
BEARER = "bearer"
LAST_USED_RESOLUTION = timedelta(minutes=1)


# --- API keys -----------------------------------------------------------------


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <secret>`` header; None without one.

    Another scheme is not a Pushsite credential: ``Basic ...`` from a password-protected
    proxy in front of the site is ignored (a public read still succeeds), never a 401.
    """
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != BEARER:
        return None
    return secret.strip()


def api_key_from(authorization: str | None) -> ApiKey | None:
    """The API key an ``Authorization`` header presents, None if it presents none; 401 for a wrong or revoked one."""
    secret = bearer_secret(authorization)
    return None if secret is None else authenticate_api_key(secret)


def require_api_key(authorization: str | None, *, missing: str) -> ApiKey:
    """The request's valid API key; NotAuthenticated(``missing``) when it presents none."""
    key = api_key_from(authorization)
    if key is None:
        raise NotAuthenticated(missing)
    return key


def key_for_publishing(authorization: str | None, slug: str, *, missing: str) -> tuple[ApiKey, Channel]:
    """An API-key publisher: its valid key (401) and the active channel ``slug`` (404) within its scope (403).

    Every way of publishing with a key goes through here; the caller then counts
    the publish against the key's rate (events/access/ratelimit.py).
    """
    key = require_api_key(authorization, missing=missing)
    channel = active_channels([slug])[0]
    require_key_for(key, channel)
    return key, channel


def key_publisher(key: ApiKey) -> str:
    """How a key is named in a message's ``publisher`` and in the logs."""
    return f"key:{key.name} ({key.prefix})"


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
    """Whether ``key`` may use ``channel``: the one scope check for every path that takes a key.

    Publishing, streamed publishing, minting tokens, history and subscribing
    all come here. "All channels" is the key's explicit flag; an empty list
    allows nothing. ``channels.all()`` uses a prefetched list when there is
    one (the access sweep checks many streams per key with no query each).
    """
    if not key.is_active:
        return False
    return key.all_channels or any(scoped.pk == channel.pk for scoped in key.channels.all())


def require_key_for(key: ApiKey, channel: Channel) -> None:
    if not key_allows(key, channel):
        raise PermissionDenied(f"This API key may not use the channel {channel.slug!r}.")


# --- subscribe tokens -----------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """What a verified subscribe token allows: channels by identity, until when, minted by which key."""

    # (pk, slug): a channel deleted and re-created with the same slug is another channel.
    channels: frozenset[tuple[int, str]]
    expires_at: float
    # The key that minted it (POST /api/tokens); None for manage.py mint_token,
    # whose tokens only a new SECRET_KEY revokes.
    key_id: int | None = None
    subject: str = ""

    @property
    def slugs(self) -> list[str]:
        return sorted(slug for _pk, slug in self.channels)

    def names(self, channel: Channel) -> bool:
        return (channel.pk, channel.slug) in self.channels


def mint_token(
    channels: Iterable[Channel], *, ttl: int | None = None, subject: str = "", key: ApiKey | None = None
) -> str:
    """A signed token that lets its holder subscribe to ``channels`` for ``ttl`` seconds.

    Minted for ``key``, it lasts only as long as that key is active and may use the channel.
    """
    max_age = conf.TOKEN_MAX_AGE_SECONDS
    lifetime = max_age if ttl is None else min(int(ttl), max_age)
    named = sorted({(c.pk, c.slug) for c in channels})
    payload = {
        "ch": [[pk, slug] for pk, slug in named],
        "exp": int(time.time()) + lifetime,
        "sub": subject,
        "key": key.pk if key is not None else None,
    }
    return signing.dumps(payload, salt=TOKEN_SALT, compress=True)


def verify_token(token: str) -> TokenGrant:
    """The grant in ``token``; raises PermissionDenied when it is tampered, outdated or expired."""
    try:
        payload: Any = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature as exc:
        raise PermissionDenied("The token is not valid (tampered, or signed for something else).") from exc
    named = payload.get("ch") if isinstance(payload, dict) else None
    key_id = payload.get("key") if isinstance(payload, dict) else None
    if (
        not isinstance(named, list)
        or not all(_is_channel_identity(item) for item in named)
        or not (key_id is None or (isinstance(key_id, int) and not isinstance(key_id, bool)))
    ):
        # Tokens from before channels were named by identity (slugs only) end here too.
        raise PermissionDenied("The token is not valid; ask the site for a fresh one.")
    expires_at = float(payload.get("exp", 0))
    if expires_at <= time.time():
        raise TokenExpired("The token has expired; ask the site for a fresh one.")
    return TokenGrant(
        channels=frozenset((int(pk), str(slug)) for pk, slug in named),
        expires_at=expires_at,
        key_id=key_id,
        subject=str(payload.get("sub", "")),
    )


def _is_channel_identity(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
        and isinstance(item[1], str)
    )


# --- sessions (the stream path bypasses Django's middleware) --------------------


def session_from_key(session_key: str | None) -> SessionBase | None:
    """The session store for a session cookie's value (loaded lazily), or None."""
    if not session_key:
        return None
    store_class = import_string(settings.SESSION_ENGINE + ".SessionStore")
    session: SessionBase = store_class(session_key)
    return session


def user_from_session(session: SessionBase | None) -> User | AnonymousUser:
    if session is None:
        return AnonymousUser()
    # django.contrib.auth.get_user only needs request.session; it also checks
    # the session hash, so a changed password or a logout ends access.
    return get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]


def user_from_session_key(session_key: str | None) -> User | AnonymousUser:
    return user_from_session(session_from_key(session_key))


# --- reading a channel -------------------------------------------------------------

_NOT_LOADED: Any = object()


@dataclass
class Reader:
    """Whoever is asking to read: a session user, a token, an API key, or nobody.

    Each credential is a grant of its own; together they allow the union.
    """

    user: User | AnonymousUser = field(default_factory=AnonymousUser)
    grant: TokenGrant | None = None
    key: ApiKey | None = None
    # The key that minted ``grant``, loaded once when first needed (None: gone).
    minting_key: ApiKey | None = field(default=_NOT_LOADED, repr=False)

    def token_key(self) -> ApiKey | None:
        assert self.grant is not None
        assert self.grant.key_id is not None
        if self.minting_key is _NOT_LOADED:
            self.minting_key = (
                ApiKey.objects.prefetch_related("channels").filter(pk=self.grant.key_id).first()
            )
        return self.minting_key


def token_allows(reader: Reader, channel: Channel) -> bool:
    """Whether the reader's token grants ``channel``: named by identity, and its key still allows it."""
    grant = reader.grant
    if grant is None or not grant.names(channel):
        return False
    if grant.key_id is None:
        return True  # manage.py mint_token: bound to SECRET_KEY only
    key = reader.token_key()
    return key is not None and key_allows(key, channel)


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
    if token_allows(reader, channel):
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


def token_expiry(channels: Iterable[Channel], reader: Reader) -> float | None:
    """When the reader loses one of ``channels`` on its own: the token's expiry, if only the token allows one.

    A channel the session or key also allows stays when the token expires.
    """
    if reader.grant is None:
        return None
    without_token = replace(reader, grant=None)
    for channel in channels:
        try:
            check_read(channel, without_token)
        except (NotAuthenticated, PermissionDenied):
            return reader.grant.expires_at
    return None


def active_channels(slugs: list[str]) -> list[Channel]:
    """The active channels named by ``slugs``, in that order; 404 for any other."""
    found = {c.slug: c for c in Channel.objects.active().filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in found]
    if missing:
        raise unknown_channel(missing[0])
    return [found[slug] for slug in slugs]
