"""Pushsite's own settings, read lazily so that ``override_settings`` works.

Each setting can be overridden in ``settings.PUSHSITE`` (a dict; pushsite/settings.py
fills it from the environment's ``PUSHSITE_<NAME>`` variables). Every value is
converted to the type of its default here, so ``conf.HEARTBEAT_SECONDS`` is a
``float`` and ``conf.MAX_MESSAGE_BYTES`` an ``int`` wherever they are read.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T", int, float)

# Each setting's converted value, until the settings change (override_settings, the
# ``settings`` fixture): why: a stream open reads seven of them (issue 16).
_values: dict[str, Any] = {}


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "PUSHSITE":
        _values.clear()


class Setting(Generic[T]):
    """One Pushsite setting: its default, and its current value converted to the default's type."""

    def __init__(self, default: T, *, minimum: T | None = None) -> None:
        self.default: T = default
        # The smallest value that makes sense; None: anything above zero
        # (system check events.E003 refuses the rest).
        self.minimum: T | None = minimum
        self.name = ""

    def allows(self, value: T) -> bool:
        return value >= self.minimum if self.minimum is not None else value > 0

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Setting[T]: ...

    @overload
    def __get__(self, instance: SettingsGroup, owner: type[Any]) -> T: ...

    def __get__(self, instance: SettingsGroup | None, owner: type[Any]) -> Setting[T] | T:
        if instance is None:
            return self
        try:
            value: T = _values[self.name]
        except KeyError:
            value = _values[self.name] = self.current()
        return value

    def current(self) -> T:
        """The value now: the override in ``settings.PUSHSITE`` converted to the default's type, or the default."""
        overrides: dict[str, Any] = getattr(settings, "PUSHSITE", {}) or {}
        if self.name not in overrides:
            return self.default
        value = overrides[self.name]
        kind = type(self.default)
        try:
            return kind(value)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"PUSHSITE_{self.name} must be {'a whole number' if kind is int else 'a number'}, not {value!r}."
            ) from exc


class SettingsGroup:
    """A set of Pushsite settings: the core's below, and each feature app's own.

    Every group reads the same ``settings.PUSHSITE`` overrides (``PUSHSITE_<NAME>``);
    defining a subclass registers it, so the system checks and the documentation
    see a feature's settings without the core naming them.
    """

    groups: list[type[SettingsGroup]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        SettingsGroup.groups.append(cls)

    @staticmethod
    def every_setting() -> dict[str, Setting[Any]]:
        """Every registered setting by name, the core's first, each group in its own order."""
        found: dict[str, Setting[Any]] = {}
        for group in SettingsGroup.groups:
            for name, setting in vars(group).items():
                if isinstance(setting, Setting):
                    found[name] = setting
        return found


class PushsiteSettings(SettingsGroup):
    """Attribute access to the core's settings with defaults, read on each access."""

    # Seconds of silence after which a stream gets a ": keep-alive" comment.
    HEARTBEAT_SECONDS = Setting(15.0)
    # The "retry:" hint sent first on every stream: how long browsers wait
    # before reconnecting.
    RETRY_MILLISECONDS = Setting(2000)
    # Largest publish request body (and encoded payload), in bytes.
    MAX_MESSAGE_BYTES = Setting(64 * 1024)
    # Deepest nesting of arrays and objects in any JSON a client sends (a
    # publish body, a streamed line, a token request, a chat action): 400 above.
    MAX_JSON_DEPTH = Setting(32)
    # Unsent bytes a connection may queue before it is disconnected as a slow
    # reader (it resumes later with Last-Event-ID).
    MAX_BACKLOG_BYTES = Setting(1024 * 1024)
    # A single write that has not completed after this long evicts the reader.
    SEND_TIMEOUT_SECONDS = Setting(10.0)
    # Channels one stream may carry (?channel=a&channel=b...).
    MAX_CHANNELS_PER_STREAM = Setting(10)
    # Publishes each API key (and each staff user) may make per window (429
    # with Retry-After past it; other keys are unaffected).
    PUBLISH_RATE_MESSAGES = Setting(1000)
    PUBLISH_RATE_SECONDS = Setting(10.0)
    # Open streams one client IP address may hold (429 above): in all server
    # processes together when they share Redis, else per process; offices
    # behind one NAT address share it.
    MAX_STREAMS_PER_IP = Setting(200)
    # Longest accepted Last-Event-ID / lastEventId, in characters.
    MAX_CURSOR_LENGTH = Setting(1024)
    # A request's head under ``manage.py serve`` (pushsite/protocol.py): its request
    # line and headers in bytes, and its number of header lines (431 above either).
    MAX_HEADER_BYTES = Setting(65536, minimum=1024)
    MAX_HEADERS = Setting(100, minimum=10)
    # Longest wait for the channel layer when fanning a message out (after the
    # publish has been answered) or opening a stream; past it the frame is
    # dropped (relays read it from the database) and a new stream gets 503.
    LAYER_TIMEOUT_SECONDS = Setting(2.0)
    # Frames each server process holds for its background fan-out
    # (events/publish/fanout.py); past it the oldest is dropped and the relays
    # read it from the database.
    FANOUT_QUEUE_SIZE = Setting(1000)
    # How often each server process compares its channels' last sequence with
    # the database, to notice a message the channel layer dropped.
    RELAY_POLL_SECONDS = Setting(2.0)
    # How often open streams on non-public channels have their reader's access
    # re-checked (logout, deactivation, membership, key revocation): the
    # longest a revoked reader keeps receiving.
    REVOCATION_SECONDS = Setting(10.0)
    # An empty channel feed stays subscribed to its group this long, so that
    # reconnect churn does not become group_add / group_discard churn.
    FEED_LINGER_SECONDS = Setting(30.0)
    # Most stored messages a new stream may ask to receive first (?rewind=N,
    # per channel); a larger N is refused with 400.
    MAX_REWIND = Setting(100, minimum=0)
    # Messages read from the database per query when replaying history.
    REPLAY_BATCH_SIZE = Setting(500)
    # Default and largest lifetime of a subscribe token, in seconds.
    TOKEN_MAX_AGE_SECONDS = Setting(3600)
    # Default number of messages a new channel keeps.
    DEFAULT_RETENTION_COUNT = Setting(1000)
    # Publishing prunes old history every this many messages per channel.
    PRUNE_EVERY = Setting(100)
    # A streamed publish (POST .../stream) that sends no byte for this long is
    # ended as failed (408).
    STREAM_IDLE_SECONDS = Setting(30.0)
    # Most parts, and most bytes of part data in all, one streamed publish may
    # carry (413 above; each line is also limited to MAX_MESSAGE_BYTES).
    STREAM_MAX_PARTS = Setting(10000)
    STREAM_MAX_BYTES = Setting(4 * 1024 * 1024)
    # How long a publish's Idempotency-Key is remembered: a retry with the same
    # key within this window gets the original answer and stores nothing.
    IDEMPOTENCY_SECONDS = Setting(86400)
    # History API page size: default and maximum.
    HISTORY_DEFAULT_LIMIT = Setting(100)
    HISTORY_MAX_LIMIT = Setting(1000)


conf = PushsiteSettings()

# The core's settings and their defaults, in the order above (feature apps'
# settings: SettingsGroup.every_setting()).
DEFAULTS: dict[str, int | float] = {
    name: setting.default for name, setting in vars(PushsiteSettings).items() if isinstance(setting, Setting)
}
