"""Published JSON kept as it was written: ``json`` on PostgreSQL instead of ``jsonb``.

``jsonb`` re-orders object keys and rewrites numbers (``-0.0`` as ``0``, ``1e300`` as a
301-digit integer); see ``events.models.PublishedJSONField``. On PostgreSQL this
rewrites the two tables once (``ALTER COLUMN ... TYPE json``). Values stored before
keep the form ``jsonb`` gave them. SQLite already keeps the text: nothing changes
there, so its tables are not rebuilt.
"""

from typing import Any

from django.db import migrations

import events.models

COLUMNS = (("message", "data"), ("publishreceipt", "response"))


def alter(kind: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        quote = schema_editor.quote_name
        for model_name, column in COLUMNS:
            table = apps.get_model("events", model_name)._meta.db_table
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} TYPE {kind} USING {quote(column)}::{kind}"
            )

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0008_publish_receipt"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(alter("json"), alter("jsonb"))],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="data",
                    field=events.models.PublishedJSONField(null=True),
                ),
                migrations.AlterField(
                    model_name="publishreceipt",
                    name="response",
                    field=events.models.PublishedJSONField(null=True),
                ),
            ],
        ),
    ]
