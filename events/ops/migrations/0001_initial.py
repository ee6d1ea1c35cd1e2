"""Take over the ops models from the core app: same tables, same rows (state only)."""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

MODELS = ["servercensus"]


def relabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions point at content types: moving them keeps what staff were granted.
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="events", model__in=MODELS).update(app_label="ops")


def unrelabel_content_types(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="ops", model__in=MODELS).update(app_label="events")


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
                    name="ServerCensus",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("process", models.CharField(help_text="host:pid", max_length=200, unique=True)),
                        ("connections", models.PositiveIntegerField(default=0)),
                        (
                            "channels",
                            models.JSONField(default=dict, help_text="Open connections per channel slug."),
                        ),
                        ("started_at", models.DateTimeField()),
                        ("updated_at", models.DateTimeField()),
                    ],
                    options={
                        "verbose_name": "server process",
                        "db_table": "events_servercensus",
                        "ordering": ["process"],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types, unrelabel_content_types),
    ]
