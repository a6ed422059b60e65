import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('strategies', '0002_execution_from_execution_app'),
        ('trades', '0003_order_status_held'),
    ]

    # The foreign keys keep pointing at the same table: only the model they name moved.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='order',
                    name='execution',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='orders', to='strategies.strategyexecution'),
                ),
                migrations.AlterField(
                    model_name='trade',
                    name='execution',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='trades', to='strategies.strategyexecution'),
                ),
                migrations.AlterField(
                    model_name='trade',
                    name='exit_execution',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='exit_trades', to='strategies.strategyexecution'),
                ),
            ],
            database_operations=[],
        ),
    ]
