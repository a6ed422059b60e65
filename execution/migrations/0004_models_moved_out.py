from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('markets', '0001_candle_from_execution'),
        ('strategies', '0002_execution_from_execution_app'),
        ('trades', '0004_execution_fks_to_strategies'),
        ('execution', '0003_execution_sandbox_isolation'),
    ]

    # Candle moved to markets and StrategyExecution to strategies, tables and all: state only.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='Candle',
                ),
                migrations.DeleteModel(
                    name='StrategyExecution',
                ),
            ],
            database_operations=[],
        ),
    ]
