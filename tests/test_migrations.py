"""Upgrading from the schema before the feature apps: same tables, same rows, same permissions."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from events.announcements.models import Announcement
from events.chat.models import ChatMute
from events.models import Channel
from events.ops.models import ServerCensus

BEFORE_THE_MOVE = "0004_chat_rooms"


@pytest.mark.django_db(transaction=True)
def test_models_moved_to_their_apps_keep_their_rows_and_permissions() -> None:
    call_command("migrate", "events", BEFORE_THE_MOVE, verbosity=0)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_channel (slug, title, description, visibility, allowed_origins,"
            " is_active, stream_storage, kind, guests_may_post, last_sequence, created_at, updated_at)"
            " VALUES ('news', '', '', 'public', '[]', %s, 'keep', 'feed', %s, 0, %s, %s)",
            [True, False, now, now],
        )
        cursor.execute("SELECT id FROM events_channel WHERE slug = 'news'")
        channel_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO events_announcement (channel_id, title, body, level, link, state, version,"
            " expiry_sent, created_by, created_at, updated_at)"
            " VALUES (%s, 'Maintenance', 'Tonight', 'info', '', 'draft', 0, %s, 'ann', %s, %s)",
            [channel_id, False, now, now],
        )
        cursor.execute(
            "INSERT INTO events_chatmute (channel_id, author, created_at) VALUES (%s, 'guest:troll', %s)",
            [channel_id, now],
        )
        cursor.execute(
            "INSERT INTO events_servercensus (process, connections, channels, started_at, updated_at)"
            " VALUES ('host:1', 3, '{}', %s, %s)",
            [now, now],
        )
    # What an existing site has: the content type as the core app, and a grant on it.
    old_type, _ = ContentType.objects.get_or_create(app_label="events", model="announcement")
    grant, _ = Permission.objects.get_or_create(
        codename="change_announcement", content_type=old_type, defaults={"name": "Can change announcement"}
    )
    editor = User.objects.create_user("editor")
    editor.user_permissions.add(grant)

    call_command("migrate", verbosity=0)

    assert Announcement._meta.db_table == "events_announcement"
    assert list(Announcement.objects.values_list("title", "channel__slug")) == [("Maintenance", "news")]
    assert list(ChatMute.objects.values_list("author", flat=True)) == ["guest:troll"]
    assert list(ServerCensus.objects.values_list("process", "connections")) == [("host:1", 3)]
    assert User.objects.get(username="editor").has_perm("announcements.change_announcement")
    assert not ContentType.objects.filter(app_label="events", model="announcement").exists()


@pytest.mark.django_db
def test_no_model_change_is_left_without_a_migration() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_every_existing_channel_gets_its_own_epoch() -> None:
    call_command("migrate", "events", "0005_feature_models_move_to_their_apps", verbosity=0)
    now = timezone.now()
    with connection.cursor() as cursor:
        for slug in ("news", "scores", "lobby"):
            cursor.execute(
                "INSERT INTO events_channel (slug, title, description, visibility, allowed_origins,"
                " is_active, stream_storage, kind, guests_may_post, last_sequence, created_at, updated_at)"
                " VALUES (%s, '', '', 'public', '[]', %s, 'keep', 'feed', %s, 7, %s, %s)",
                [slug, True, False, now, now],
            )

    call_command("migrate", verbosity=0)

    epochs = dict(Channel.objects.values_list("slug", "epoch"))
    assert set(epochs) == {"news", "scores", "lobby"}
    assert len(set(epochs.values())) == 3
    assert all(re.fullmatch(r"[0-9a-f]{8}", epoch) for epoch in epochs.values())
    assert set(Channel.objects.values_list("last_sequence", flat=True)) == {7}
