from django.db import migrations


def position_points(apps, schema_editor):
    """Each subscription with a position gets a point for it after its starting point (written
    by subscriptions 0004), so its curve shows what it holds before the next close."""
    subscription_model = apps.get_model("subscriptions", "StrategySubscription")
    position_model = apps.get_model("trades", "Position")
    point_model = apps.get_model("subscriptions", "EquityPoint")
    capitals = dict(subscription_model.objects.values_list("pk", "capital"))
    starts = dict(subscription_model.objects.values_list("pk", "created_at"))
    points = (
        point_model(
            subscription_id=position.subscription_id,
            time=max(position.updated_at, starts[position.subscription_id]),
            kind="daily",
            equity=capitals[position.subscription_id]
            + position.realized_pnl
            + position.unrealized_pnl,
            capital=capitals[position.subscription_id],
            realized=position.realized_pnl,
            unrealized=position.unrealized_pnl,
            fees=position.fees_paid,
            detail={},
        )
        for position in position_model.objects.all().iterator()
    )
    point_model.objects.bulk_create(points, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0004_equity_points"),
        ("trades", "0005_order_purpose_typed"),
    ]

    operations = [migrations.RunPython(position_points, migrations.RunPython.noop)]
