import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('execution', '0003_execution_sandbox_isolation'),
        ('strategies', '0001_initial'),
    ]

    # The table was created by the execution app (execution_strategyexecution): only Django's state moves.
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='StrategyExecution',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('interval_start', models.DateTimeField(help_text='Open time of the candle that closed.')),
                        ('interval_end', models.DateTimeField(help_text='Close time of that candle.')),
                        ('trigger', models.CharField(choices=[('beat', 'Beat schedule'), ('stream', 'Candle stream'), ('manual', 'Manual'), ('replay', 'Replay'), ('backfill', 'Stream backfill')], default='beat', max_length=10)),
                        ('scheduled_at', models.DateTimeField(blank=True, null=True)),
                        ('started_at', models.DateTimeField()),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('duration_ms', models.FloatField(blank=True, null=True)),
                        ('drift_ms', models.FloatField(blank=True, help_text='Candle close → start.', null=True)),
                        ('data_available_at', models.DateTimeField(blank=True, null=True)),
                        ('worker_id', models.CharField(blank=True, max_length=200)),
                        ('attempts', models.PositiveSmallIntegerField(default=1)),
                        ('status', models.CharField(choices=[('running', 'Running'), ('success', 'Success'), ('no_signal', 'No signal'), ('failed', 'Failed'), ('skipped', 'Skipped')], default='running', max_length=10)),
                        ('signal', models.JSONField(blank=True, null=True)),
                        ('error', models.TextField(blank=True)),
                        ('logs', models.TextField(blank=True)),
                        ('sandbox_isolation', models.CharField(blank=True, max_length=16)),
                        ('settings_version', models.PositiveIntegerField(blank=True, null=True)),
                        ('code_version', models.PositiveIntegerField(blank=True, null=True)),
                        ('candles_used', models.PositiveIntegerField(default=0)),
                        ('close_price', models.DecimalField(blank=True, decimal_places=12, help_text='Close of the candle that produced the signal.', max_digits=30, null=True)),
                        ('subscriber_count', models.PositiveIntegerField(default=0)),
                        ('trades_generated', models.PositiveIntegerField(default=0)),
                        ('fanout_total', models.PositiveIntegerField(default=0)),
                        ('fanout_done', models.PositiveIntegerField(default=0)),
                        ('fanout_dispatched_at', models.DateTimeField(blank=True, null=True)),
                        ('first_order_at', models.DateTimeField(blank=True, null=True)),
                        ('last_order_at', models.DateTimeField(blank=True, null=True)),
                        ('strategy', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='executions', to='strategies.strategy')),
                    ],
                    options={
                        'db_table': 'execution_strategyexecution',
                        'ordering': ('-interval_start', '-id'),
                        'indexes': [models.Index(fields=['strategy', 'status'], name='execution_s_strateg_faa816_idx')],
                        'constraints': [models.UniqueConstraint(fields=('strategy', 'interval_start'), name='uniq_execution_per_candle')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
