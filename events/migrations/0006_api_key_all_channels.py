"""API keys say "all channels" explicitly (issue 13): an empty scope no longer means every channel.

Existing keys with no channels were all-channel keys and keep that, now as
the flag. Going back, keys that would widen (no channels, not all channels:
scoped to nothing) are deactivated rather than becoming all-channel keys.
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def flag_unscoped_keys(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    ApiKey = apps.get_model("events", "ApiKey")
    ApiKey.objects.filter(channels__isnull=True).update(all_channels=True)


def deactivate_keys_that_would_widen(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    ApiKey = apps.get_model("events", "ApiKey")
    ApiKey.objects.filter(all_channels=False, channels__isnull=True).update(is_active=False)


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0005_feature_models_move_to_their_apps"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="all_channels",
            field=models.BooleanField(
                default=False,
                help_text="May use every channel, including channels created later; the list below is then ignored.",
            ),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="channels",
            field=models.ManyToManyField(
                blank=True,
                help_text="Channels this key may use when it is not for all channels; none selected means none.",
                related_name="api_keys",
                to="events.channel",
            ),
        ),
        migrations.RunPython(flag_unscoped_keys, deactivate_keys_that_would_widen),
    ]
