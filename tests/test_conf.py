"""events/conf.py: defaults, overrides read lazily, every value of its default's type."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from events.conf import DEFAULTS, conf


def test_defaults_without_overrides() -> None:
    with override_settings(PUSHSITE={}):
        assert conf.HEARTBEAT_SECONDS == 15.0
        assert conf.MAX_MESSAGE_BYTES == 64 * 1024


def test_defaults_lists_every_setting_in_order() -> None:
    assert list(DEFAULTS)[:2] == ["HEARTBEAT_SECONDS", "RETRY_MILLISECONDS"]
    assert DEFAULTS["MAX_BACKLOG_BYTES"] == 1024 * 1024
    assert all(getattr(conf, name) == default for name, default in DEFAULTS.items())


@pytest.mark.parametrize(
    ("name", "override", "expected"),
    [
        ("HEARTBEAT_SECONDS", "7.5", 7.5),
        ("HEARTBEAT_SECONDS", 2, 2.0),
        ("MAX_MESSAGE_BYTES", "1000", 1000),
        ("MAX_MESSAGE_BYTES", 1000, 1000),
    ],
)
def test_overrides_take_the_type_of_the_default(name: str, override: object, expected: float) -> None:
    with override_settings(PUSHSITE={name: override}):
        value = getattr(conf, name)
    assert value == expected
    assert type(value) is type(DEFAULTS[name])


@pytest.mark.parametrize("override", ["lots", None, [1]])
def test_a_value_of_another_kind_is_a_configuration_error(override: object) -> None:
    with (
        override_settings(PUSHSITE={"MAX_BACKLOG_BYTES": override}),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        _ = conf.MAX_BACKLOG_BYTES
    assert str(info.value) == f"PUSHSITE_MAX_BACKLOG_BYTES must be a whole number, not {override!r}."


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        _ = conf.NOT_A_SETTING  # type: ignore[attr-defined]  # the point of the test


def test_feature_settings_are_registered_beside_the_cores() -> None:
    from events.chat.conf import chat_conf
    from events.conf import SettingsGroup

    every = SettingsGroup.every_setting()
    assert list(every)[: len(DEFAULTS)] == list(DEFAULTS)  # the core's first, in order
    assert every["CHAT_HISTORY"].default == 50
    assert "CHAT_HISTORY" not in DEFAULTS  # the core names no feature's setting
    with override_settings(PUSHSITE={"CHAT_HISTORY": "20"}):
        assert chat_conf.CHAT_HISTORY == 20
