"""An API key's scope only narrows by accident: "all channels" is an explicit flag (issue 13)."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from events.access.auth import key_allows, mint_token, verify_token
from events.access.revocation import Access, revoked
from events.models import ApiKey, Channel
from events.provisioning import create_api_key, upsert_channel

pytestmark = pytest.mark.django_db


def test_an_all_channels_key_may_use_every_channel_also_ones_created_later() -> None:
    key, _ = create_api_key("everything", all_channels=True)
    later, _ = upsert_channel("later")
    assert key.all_channels
    assert key_allows(key, later)


def test_a_scoped_key_may_use_its_channels_only() -> None:
    news, _ = upsert_channel("news")
    other, _ = upsert_channel("other")
    key, _ = create_api_key("news only", ["news"])
    assert not key.all_channels
    assert key_allows(key, news)
    assert not key_allows(key, other)


def test_deleting_a_scoped_keys_last_channel_leaves_a_key_for_nothing() -> None:
    upsert_channel("news")
    other, _ = upsert_channel("other")
    key, _ = create_api_key("news only", ["news"])
    Channel.objects.filter(slug="news").delete()
    key.refresh_from_db()
    assert list(key.channels.all()) == []
    assert not key_allows(key, other)


def test_emptying_a_keys_list_leaves_a_key_for_nothing() -> None:
    news, _ = upsert_channel("news")
    key, _ = create_api_key("news only", ["news"])
    key.channels.clear()
    assert not key_allows(key, news)


def test_a_new_key_without_the_flag_is_for_nothing() -> None:
    news, _ = upsert_channel("news")
    key, _ = ApiKey.generate("typed in the admin")
    key.save()
    assert not key_allows(key, news)


def test_a_revoked_key_allows_nothing() -> None:
    news, _ = upsert_channel("news")
    key, _ = create_api_key("everything", all_channels=True)
    key.is_active = False
    assert not key_allows(key, news)


@pytest.mark.parametrize(("slugs", "all_channels"), [((), False), (("news",), True)])
def test_provisioning_refuses_an_ambiguous_scope(slugs: tuple[str, ...], all_channels: bool) -> None:
    upsert_channel("news")
    with pytest.raises(ValidationError, match="exactly one"):
        create_api_key("ambiguous", slugs, all_channels=all_channels)


def test_the_command_without_channel_creates_an_explicit_all_channels_key() -> None:
    out = StringIO()
    call_command("create_api_key", "ci", stdout=out)
    assert "for all channels" in out.getvalue()
    key = ApiKey.objects.get(name="ci")
    assert key.all_channels
    assert not key.channels.exists()


def test_the_command_refuses_all_channels_with_a_channel() -> None:
    upsert_channel("news")
    with pytest.raises(CommandError, match="not both"):
        call_command("create_api_key", "ci", "--all-channels", "--channel", "news", stdout=StringIO())
    assert not ApiKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_upgrade_keeps_unscoped_keys_for_all_channels_and_scoped_keys_scoped() -> None:
    call_command("migrate", "events", "0005", verbosity=0)
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
        for name in ("old-unscoped", "old-scoped"):
            cursor.execute(
                "INSERT INTO events_apikey (name, prefix, secret_hash, is_active, created_at)"
                " VALUES (%s, %s, 'x', %s, %s)",
                [name, name[:16], True, now],
            )
        cursor.execute("SELECT id FROM events_apikey WHERE name = 'old-scoped'")
        scoped_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO events_apikey_channels (apikey_id, channel_id) VALUES (%s, %s)",
            [scoped_id, channel_id],
        )

    call_command("migrate", verbosity=0)

    flags = dict(ApiKey.objects.values_list("name", "all_channels"))
    assert flags == {"old-unscoped": True, "old-scoped": False}
    assert list(ApiKey.objects.get(name="old-scoped").channels.values_list("slug", flat=True)) == ["news"]


def test_the_admin_shows_the_flag_and_each_keys_scope(admin_client: Client) -> None:
    upsert_channel("news")
    create_api_key("everything", all_channels=True)
    create_api_key("news only", ["news"])
    emptied, _ = create_api_key("emptied", ["news"])
    emptied.channels.clear()
    page = admin_client.get("/admin/events/apikey/").content.decode()
    assert "All channels" in page  # the column and the filter
    rows = {
        name: page.split(name, 1)[1].split("</tr>", 1)[0] for name in ("everything", "news only", "emptied")
    }
    assert "all channels" in rows["everything"]
    assert "news" in rows["news only"]
    assert ">none<" in rows["emptied"]
    assert 'name="all_channels"' in admin_client.get("/admin/events/apikey/add/").content.decode()


# Where a key's scope may be read: the check itself, and the places that create
# or show keys. A new path that reads the scope on its own fails here: it must
# call events.access.auth.key_allows instead.
SCOPE_READERS = {
    "events/access/auth.py",
    "events/models.py",
    "events/provisioning.py",
    "events/admin.py",
    "events/management/commands/create_api_key.py",
    "events/demo/management/commands/seed_demo.py",
}


def test_only_key_allows_decides_a_keys_scope() -> None:
    root = Path(__file__).resolve().parents[2]
    reads_scope = re.compile(r"\ball_channels\b|\bkey\.channels\b|\.api_keys\b|api_keys__")
    offenders = sorted(
        str(path.relative_to(root))
        for path in (root / "events").rglob("*.py")
        if "migrations" not in path.parts
        and str(path.relative_to(root)) not in SCOPE_READERS
        and reads_scope.search(path.read_text())
    )
    assert offenders == []


def test_the_access_sweep_checks_many_token_streams_of_a_key_in_a_few_queries(
    django_assert_max_num_queries: Any,
) -> None:
    vaults = [upsert_channel(f"vault-{n}", visibility="private")[0] for n in range(5)]
    key, _ = create_api_key("backend", [v.slug for v in vaults])
    checks = {
        (
            Access(
                session_key=None,
                token=verify_token(mint_token([v], ttl=60, subject=str(n), key=key)),
                key_id=None,
            ),
            frozenset({v.pk}),
        )
        for n in range(20)
        for v in vaults
    }
    with django_assert_max_num_queries(4):
        assert revoked(checks) == set()
    key.channels.remove(vaults[0])
    lost = revoked(checks)
    assert {next(iter(ids)) for _access, ids in lost} == {vaults[0].pk}
    assert len(lost) == 20


def _sql_allows(key: ApiKey, channel: Channel) -> bool:
    from events.access.auth import KEY_ALLOWS_CHANNEL_SQL, key_allows_channel_params

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {Channel._meta.db_table} WHERE id = %s AND {KEY_ALLOWS_CHANNEL_SQL}",
            [channel.pk, *key_allows_channel_params(key.pk)],
        )
        return cursor.fetchone() is not None


def test_the_sql_form_of_the_scope_check_says_what_key_allows_says() -> None:
    # Publishing checks a remembered key's authority in SQL (issue 17): both forms must agree.
    news, _ = upsert_channel("news")
    other, _ = upsert_channel("other")
    everything, _ = create_api_key("everything", all_channels=True)
    scoped, _ = create_api_key("news only", ["news"])
    emptied, _ = create_api_key("emptied", ["news"])
    emptied.channels.clear()
    revoked_key, _ = create_api_key("revoked", all_channels=True)
    ApiKey.objects.filter(pk=revoked_key.pk).update(is_active=False)
    revoked_scoped, _ = create_api_key("revoked scoped", ["news"])
    ApiKey.objects.filter(pk=revoked_scoped.pk).update(is_active=False)
    answers = {}
    for key in (everything, scoped, emptied, revoked_key, revoked_scoped):
        key = ApiKey.objects.get(pk=key.pk)
        for channel in (news, other):
            assert _sql_allows(key, channel) == key_allows(key, channel), (key.name, channel.slug)
            answers[key.name, channel.slug] = key_allows(key, channel)
    # The table is not trivially all-False or all-True.
    assert answers[("everything", "other")]
    assert answers[("news only", "news")]
    assert not answers[("news only", "other")]
    assert not answers[("revoked", "news")]
