import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('execution', '0003_execution_sandbox_isolation'),
    ]

    # The table was created by the execution app (execution_candle): only Django's state moves.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Candle',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('exchange', models.CharField(max_length=50)),
                        ('symbol', models.CharField(max_length=50)),
                        ('resolution', models.CharField(max_length=4)),
                        ('open_time', models.DateTimeField()),
                        ('open', models.DecimalField(decimal_places=12, max_digits=30)),
                        ('high', models.DecimalField(decimal_places=12, max_digits=30)),
                        ('low', models.DecimalField(decimal_places=12, max_digits=30)),
                        ('close', models.DecimalField(decimal_places=12, max_digits=30)),
                        ('volume', models.DecimalField(decimal_places=12, max_digits=36)),
                        ('received_at', models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={
                        'db_table': 'execution_candle',
                        'ordering': ('exchange', 'symbol', 'resolution', 'open_time'),
                        'constraints': [models.UniqueConstraint(fields=('exchange', 'symbol', 'resolution', 'open_time'), name='uniq_candle')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
