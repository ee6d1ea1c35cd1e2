from __future__ import annotations

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0007_channel_epoch"),
    ]

    operations = [
        migrations.CreateModel(
            name="PublishReceipt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("scope", models.CharField(max_length=210)),
                ("key", models.CharField(max_length=255)),
                ("fingerprint", models.CharField(blank=True, max_length=64)),
                ("status", models.PositiveSmallIntegerField(null=True)),
                ("response", models.JSONField(null=True)),
                ("message_id", models.BigIntegerField(null=True)),
                ("body_bytes", models.BigIntegerField(null=True)),
                ("running_until", models.DateTimeField(null=True)),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                (
                    "channel",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="events.channel"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("channel", "scope", "key"), name="unique_publish_receipt")
                ],
            },
        ),
    ]
