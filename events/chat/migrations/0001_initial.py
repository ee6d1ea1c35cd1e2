"""Take over the chat models from the core app: same tables, same rows (state only)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

MODELS = ["chatmute", "chatpresence"]


def relabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions point at content types: moving them keeps what staff were granted.
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="events", model__in=MODELS).update(app_label="chat")


def unrelabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="chat", model__in=MODELS).update(app_label="events")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("events", "0005_feature_models_move_to_their_apps"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ChatMute",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("author", models.CharField(max_length=200)),
                        (
                            "until",
                            models.DateTimeField(
                                blank=True, help_text="Empty: muted until unmuted.", null=True
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="mutes",
                                to="events.channel",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "events_chatmute",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(fields=["channel", "author"], name="events_chat_channel_58884a_idx")
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="ChatPresence",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("connection", models.CharField(max_length=64, unique=True)),
                        ("author", models.CharField(max_length=200)),
                        ("name", models.CharField(max_length=150)),
                        ("guest", models.BooleanField(default=False)),
                        ("process", models.CharField(max_length=200)),
                        ("last_seen", models.DateTimeField(db_index=True)),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="presence",
                                to="events.channel",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "events_chatpresence",
                        "indexes": [
                            models.Index(
                                fields=["channel", "last_seen"], name="events_chat_channel_afabec_idx"
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types, unrelabel_content_types),
    ]
