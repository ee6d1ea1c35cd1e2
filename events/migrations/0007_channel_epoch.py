from __future__ import annotations

from typing import Any

from django.db import migrations, models

import events.models


def give_each_channel_its_own_epoch(apps: Any, schema_editor: Any) -> None:
    # AddField evaluates a callable default once for all rows; each channel gets its own.
    Channel = apps.get_model("events", "Channel")
    for channel in Channel.objects.only("pk"):
        Channel.objects.filter(pk=channel.pk).update(epoch=events.models.new_epoch())


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0006_api_key_all_channels"),
    ]

    operations = [
        migrations.AddField(
            model_name="channel",
            name="epoch",
            field=models.CharField(default=events.models.new_epoch, editable=False, max_length=16),
        ),
        migrations.RunPython(give_each_channel_its_own_epoch, migrations.RunPython.noop),
    ]
