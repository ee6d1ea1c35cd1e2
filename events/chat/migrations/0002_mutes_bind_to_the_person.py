"""Chat moderation binds to the person (issue 13): mutes by user id or guest identity, nicknames claimed per room."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def bind_user_mutes_to_the_user(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # "user:<name>" becomes "user:<pk>"; guest mutes from before stay by label
    # (there is no record of which session held that nickname).
    ChatMute = apps.get_model("chat", "ChatMute")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    field = getattr(User, "USERNAME_FIELD", "username")
    for mute in ChatMute.objects.filter(author__startswith="user:", person=""):
        user = User.objects.filter(**{field: mute.author[len("user:") :]}).first()
        if user is not None:
            mute.person = f"user:{user.pk}"
            mute.save(update_fields=["person"])


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_initial"),
        ("events", "0006_api_key_all_channels"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ChatNickname",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=150)),
                ("name_key", models.CharField(editable=False, max_length=150)),
                ("person", models.CharField(max_length=200)),
                ("claimed_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AddField(
            model_name="chatmute",
            name="person",
            field=models.CharField(blank=True, default="", editable=False, max_length=200),
        ),
        migrations.AddIndex(
            model_name="chatmute",
            index=models.Index(fields=["channel", "person"], name="chat_mute_person_idx"),
        ),
        migrations.AddField(
            model_name="chatnickname",
            name="channel",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="nicknames", to="events.channel"
            ),
        ),
        migrations.AddConstraint(
            model_name="chatnickname",
            constraint=models.UniqueConstraint(
                fields=("channel", "name_key"), name="chat_nickname_unique_in_room"
            ),
        ),
        migrations.RunPython(bind_user_mutes_to_the_user, migrations.RunPython.noop),
    ]
