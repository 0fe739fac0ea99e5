# Uploads were tied to the uploader's raw session key, a live login for anyone who could read it (staff
# in the admin, a database backup). The keys are dropped, not hashed: the new owner token lives in the
# session, so an old key cannot be turned into one. Anonymous visitors lose the "your recent photos"
# list and feedback for uploads made before this migration; signed-in uploaders keep them through `user`.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("classifier", "0003_classification_running_index"),
    ]

    operations = [
        migrations.RemoveField(model_name="classification", name="session_key"),
        migrations.AddField(
            model_name="classification",
            name="owner_token",
            field=models.CharField(blank=True, db_index=True, editable=False, max_length=64),
        ),
    ]
