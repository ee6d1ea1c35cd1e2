"""Who may publish and who may subscribe: API keys, sessions and signed tokens."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
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
from events.exceptions import (
    ChannelHidden,
    ChannelNotFound,
    InvalidInput,
    NotAuthenticated,
    PermissionDenied,
    TokenExpired,
)
from events.models import ApiKey, Channel, Visibility, hash_secret

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


# --- API keys already verified for publishing (issue 17) ---------------------------

# Most keys one process remembers; past it the oldest is forgotten (and looked up again).
MAX_VERIFIED_KEYS = 1024


class VerifiedKeys:
    """Which API key a secret is, remembered per process for at most ``PUSHSITE_REVOCATION_SECONDS``.

    Only the secret's identity is remembered (the key, found by the hash of the
    secret). Whether that key is still active and may use the channel is checked
    again on every publish, in the statement that takes the sequence number
    (events/publish/store.py), so a revoked or narrowed key is refused at once; a
    renamed key keeps its old name in ``publisher`` for at most the TTL.
    Thread-safe: the database threads share one instance.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._keys: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> ApiKey | None:
        with self._lock:
            entry = self._keys.get(digest)
            if entry is None:
                return None
            if self.clock() - entry[0] >= conf.REVOCATION_SECONDS:
                del self._keys[digest]
                return None
            return entry[1]

    def put(self, digest: str, key: ApiKey) -> None:
        if conf.REVOCATION_SECONDS <= 0:
            return
        with self._lock:
            self._keys[digest] = (self.clock(), key)
            self._keys.move_to_end(digest)
            while len(self._keys) > MAX_VERIFIED_KEYS:
                self._keys.popitem(last=False)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._keys.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


verified_keys = VerifiedKeys()


def publishing_key(authorization: str | None, slug: str, *, missing: str) -> tuple[ApiKey, str]:
    """The key an API-key publisher presents and the digest it is remembered by.

    A key verified recently (:class:`VerifiedKeys`) costs no query; its authority
    over ``slug`` is then checked when storing (``key_id`` of
    events/publish/store.py's ``store_message``). Otherwise the full check of
    :func:`key_for_publishing` runs first (401, 404, 403).
    """
    secret = bearer_secret(authorization)
    if secret is None:
        raise NotAuthenticated(missing)
    digest = hash_secret(secret)
    key = verified_keys.get(digest)
    if key is None:
        key, _channel = key_for_publishing(authorization, slug, missing=missing)
        verified_keys.put(digest, key)
    return key, digest


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


def key_id_allows(key_id: int, channel: Channel) -> bool:
    """:func:`key_allows` for a key known by its id, read afresh."""
    key = ApiKey.objects.filter(pk=key_id).prefetch_related("channels").first()
    return key is not None and key_allows(key, channel)


# key_allows as SQL, for a statement on the channel table: publishing checks the
# key's authority in the statement that takes the sequence number (issue 17), so
# a revoked or narrowed key is refused at once at no extra query. Must say what
# key_allows says (tests/access/test_key_scope.py compares them).
_KEY_CHANNELS = ApiKey._meta.get_field("channels")
KEY_ALLOWS_CHANNEL_SQL = (
    f"EXISTS (SELECT 1 FROM {ApiKey._meta.db_table} k WHERE k.id = %s AND k.is_active = %s"
    f" AND (k.all_channels = %s OR EXISTS (SELECT 1 FROM {_KEY_CHANNELS.m2m_db_table()} s"
    f" WHERE s.{_KEY_CHANNELS.m2m_column_name()} = k.id"
    f" AND s.{_KEY_CHANNELS.m2m_reverse_name()} = {Channel._meta.db_table}.id)))"
)


def key_allows_channel_params(key_id: int) -> list[Any]:
    """The parameters of :data:`KEY_ALLOWS_CHANNEL_SQL`, in order."""
    return [key_id, True, True]


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
    A ``ttl`` over PUSHSITE_TOKEN_MAX_AGE_SECONDS is capped; under 1 s it is InvalidInput.
    """
    max_age = conf.TOKEN_MAX_AGE_SECONDS
    if ttl is not None and ttl < 1:
        raise InvalidInput(f"ttl must be at least 1 second (got {ttl}): a token born expired grants nothing.")
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


def readable_channels(
    slugs: list[str], reader: Reader, *, active: Mapping[str, Channel] | None = None
) -> list[Channel]:
    """The active channels named by ``slugs`` that ``reader`` may read, in order.

    The first slug that is unknown *or* unreadable is refused, in the order
    asked, so a refusal never depends on whether a later channel exists.
    Credentials must be checked before this (their errors name no channel).
    ``active``: the active channels by slug, already read for a batch of readers
    (events/deliver/admission.py); it must hold every active channel of ``slugs``.
    """
    found = {c.slug: c for c in Channel.objects.active().filter(slug__in=slugs)} if active is None else active
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
