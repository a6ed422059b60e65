"""Drop the index of ``notifications_notification.user_id``: the unique (user, key) begins
with it and serves every lookup by user (the API's list, the outbox's reads, deleting a
user's rows), and a fan-out batch wrote it for each of its thousands of notices (issue 16).
Reversible.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0003_divergence_event'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='notification',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to=settings.AUTH_USER_MODEL),
        ),
    ]
