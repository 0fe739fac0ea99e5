"""One task runs one job: the batch bookkeeping columns go.

Data-safe for jobs in flight: a job left running in a batch of an old worker is claimable again once
its lease expires (or at once, claimed before leases), and the periodic requeue sends it a task of its own.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("classifier", "0005_classification_lease_unsent_task_error_detail"),
    ]

    operations = [
        migrations.RemoveField(model_name="classification", name="batch_leader"),
        migrations.RemoveField(model_name="classification", name="batch_size"),
    ]
