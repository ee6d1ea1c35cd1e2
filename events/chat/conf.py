"""Chat rooms' settings: ``PUSHSITE_CHAT_*`` and ``PUSHSITE_PRESENCE_*``, read like the core's."""

from __future__ import annotations

from events.conf import Setting, SettingsGroup


class ChatSettings(SettingsGroup):
    """Attribute access to the chat app's settings with defaults, read on each access."""

    # Longest message in characters (a room may set its own).
    CHAT_MAX_LENGTH = Setting(500)
    # Messages one participant may post per window, and the window.
    CHAT_RATE_MESSAGES = Setting(5)
    CHAT_RATE_SECONDS = Setting(10.0)
    # Messages one client IP address may post per window (people behind one NAT
    # share it, so it is higher).
    CHAT_IP_RATE_MESSAGES = Setting(30)
    # Messages a room page renders before it goes live.
    CHAT_HISTORY = Setting(50)
    # A guest's nickname stays held for that guest in a room this many days after
    # its last message there; then, once no kept message carries it, anyone may take it.
    CHAT_NICKNAME_HOLD_DAYS = Setting(30)
    # Nicknames one client address may claim per window: each claim holds a name
    # for days and a session, so one address must not squat every name a room's
    # guests might want.
    CHAT_NICKNAME_CLAIMS = Setting(20)
    CHAT_NICKNAME_CLAIM_SECONDS = Setting(3600.0)
    # How often each process marks its chat streams as present; a row not
    # refreshed for three intervals (its process died) is dropped.
    PRESENCE_REFRESH_SECONDS = Setting(5.0)


chat_conf = ChatSettings()
