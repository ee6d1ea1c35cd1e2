"""Take over the announcements models from the core app: same tables, same rows (state only)."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

import events.models

MODELS = ["announcement"]


def relabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions point at content types: moving them keeps what staff were granted.
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="events", model__in=MODELS).update(app_label="announcements")


def unrelabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="announcements", model__in=MODELS).update(app_label="events")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("events", "0005_feature_models_move_to_their_apps"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Announcement",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("title", models.CharField(max_length=200)),
                        ("body", models.TextField(max_length=2000)),
                        (
                            "level",
                            models.CharField(
                                choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")],
                                default="info",
                                max_length=16,
                            ),
                        ),
                        (
                            "link",
                            models.URLField(
                                blank=True,
                                help_text="Optional, http(s) only.",
                                validators=[events.models.validate_web_link],
                            ),
                        ),
                        (
                            "publish_at",
                            models.DateTimeField(
                                blank=True,
                                help_text="When a scheduled announcement goes out (your time zone: UTC).",
                                null=True,
                            ),
                        ),
                        (
                            "expires_at",
                            models.DateTimeField(
                                blank=True, help_text="When pages hide it; empty: never.", null=True
                            ),
                        ),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("draft", "Draft"),
                                    ("scheduled", "Scheduled"),
                                    ("published", "Published"),
                                    ("retracted", "Retracted"),
                                ],
                                default="draft",
                                editable=False,
                                max_length=16,
                            ),
                        ),
                        ("version", models.PositiveIntegerField(default=0, editable=False)),
                        ("expiry_sent", models.BooleanField(default=False, editable=False)),
                        ("created_by", models.CharField(blank=True, editable=False, max_length=150)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="announcements",
                                to="events.channel",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "events_announcement",
                        "ordering": ["-publish_at", "-created_at"],
                        "indexes": [
                            models.Index(fields=["state", "publish_at"], name="events_anno_state_3ddb91_idx"),
                            models.Index(fields=["state", "expires_at"], name="events_anno_state_3d14ce_idx"),
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types, unrelabel_content_types),
    ]
