import trades.purposes
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('trades', '0004_execution_fks_to_strategies'),
    ]

    # The column is unchanged (varchar 32): only the Python type of its values is new.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='order',
                    name='purpose',
                    field=trades.purposes.OrderPurposeField(max_length=32),
                ),
            ],
            database_operations=[],
        ),
    ]
