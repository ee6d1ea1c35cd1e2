"""Chat, announcements and operations became apps of their own (issue 12).

State only: their tables keep their names (events_chatmute, events_chatpresence,
events_announcement, events_servercensus) and their rows; each app's 0001
migration takes the models over and relabels their content types, so
permissions granted on them are kept.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0004_chat_rooms"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name="announcement",
                    name="channel",
                ),
                migrations.RemoveField(
                    model_name="chatmute",
                    name="by",
                ),
                migrations.RemoveField(
                    model_name="chatmute",
                    name="channel",
                ),
                migrations.RemoveField(
                    model_name="chatpresence",
                    name="channel",
                ),
                migrations.DeleteModel(
                    name="ServerCensus",
                ),
                migrations.DeleteModel(
                    name="Announcement",
                ),
                migrations.DeleteModel(
                    name="ChatMute",
                ),
                migrations.DeleteModel(
                    name="ChatPresence",
                ),
            ],
        ),
    ]
