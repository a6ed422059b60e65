"""Drop indexes another index already serves; every fan-out batch wrote each of them for
each of its thousands of trades and orders (issue 16). Reversible: each comes back as it was.

* ``trades_trade.execution_id``: the unique (execution, subscription) begins with it; every
  lookup by execution (the batch's trades, ``exit_execution`` aside, the admin's execution
  link, deleting an execution's rows) is served by that index.
* ``trades_trade.subscription_id``: (subscription, status) begins with it; the lookups by
  subscription (positions, guards, selectors, the admin's ``=subscription__id`` search) are
  served by it.
* ``trades_order.execution_id``: the unique (execution, subscription, purpose) begins with it.
* ``trades_protectiontrip.subscription_id``: ``trip_sub_time`` (subscription, created_at)
  begins with it.
* The ``…_like`` indexes (``varchar_pattern_ops``) PostgreSQL gets for the unique
  ``client_order_id`` of trades and orders and ``exit_client_order_id`` of trades: they serve
  only ``LIKE 'prefix%'``, which no query runs on these columns (the admin's search is
  ``icontains``, ``LIKE '%…%'``, which no b-tree serves; equality uses the unique index).
  Django does not track these, so they are dropped by name, on PostgreSQL only.

Kept: ``trades_order.subscription_id`` and ``trade_id`` (no other index begins with them),
``trades_trade.exit_execution_id`` (the lookups of an exit's trades).
"""

import django.db.models.deletion
from django.db import migrations, models

# (index, table, column) of the pattern indexes PostgreSQL made for the unique varchars.
LIKE_INDEXES = (
    ("trades_trade_client_order_id_f3e2747a_like", "trades_trade", "client_order_id"),
    (
        "trades_trade_exit_client_order_id_5012ee39_like",
        "trades_trade",
        "exit_client_order_id",
    ),
    ("trades_order_client_order_id_98c20fe2_like", "trades_order", "client_order_id"),
)


def drop_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in LIKE_INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def create_like_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, column in LIKE_INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}" varchar_pattern_ops)'
        )


class Migration(migrations.Migration):

    dependencies = [
        ('strategies', '0003_execution_started_at_index'),
        ('subscriptions', '0007_credential_permissions'),
        ('trades', '0008_divergence'),
    ]

    operations = [
        migrations.RunPython(drop_like_indexes, create_like_indexes),
        migrations.AlterField(
            model_name='order',
            name='execution',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='orders', to='strategies.strategyexecution'),
        ),
        migrations.AlterField(
            model_name='protectiontrip',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='protection_trips', to='subscriptions.strategysubscription'),
        ),
        migrations.AlterField(
            model_name='trade',
            name='execution',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='trades', to='strategies.strategyexecution'),
        ),
        migrations.AlterField(
            model_name='trade',
            name='subscription',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='trades', to='subscriptions.strategysubscription'),
        ),
    ]
