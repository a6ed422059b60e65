"""Helpers for the API tests: authenticated clients and the shape of error answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from markets.registry import market_key, registry_strategy_ids
from strategies.models import StrategyExecution
from subscriptions.services import credential_create
from trades.models import Order, Position, Trade
from trades.purposes import OrderPurpose

VALID_CODE = """
LOOKBACK = 10

def generate_signal(candles, settings):
    return None
"""


def client_for(user: Any, *, keyword: str = "Bearer") -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token.key}")
    return client


def field_errors(response: Any) -> dict[str, list[str]]:
    """The field errors of a 400, after checking the answer has the common error shape."""
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    return body["errors"]


def strategy_change_rate(settings: Any, rate: str) -> None:
    """Set the per-user rate of deploys and settings changes (``settings``: pytest-django's)."""
    rates = {**settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}), "strategy_changes": rate}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


def deploy_payload(**overrides: Any) -> dict[str, Any]:
    payload = {
        "name": "Momentum",
        "description": "buys strength",
        "code": VALID_CODE,
        "exchange": "binance",
        "symbol": "ETH/BTC",
        "resolution": "5m",
        "settings": {"fast": 5},
        "is_public": False,
        "is_marketplace": False,
    }
    payload.update(overrides)
    return payload


def make_credential(user: Any, *, exchange: str = "binance", label: str = "main"):
    return credential_create(
        user=user,
        exchange=exchange,
        label=label,
        api_key="AKIA-plain-key-1234",
        secret="very-secret-value-XYZ",
    )


def make_execution(strategy: Any, *, start: datetime | None = None, **fields: Any):
    """An execution row as the execution service records it (for reads; nothing runs)."""
    start = start or datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
        minutes=5 * StrategyExecution.objects.filter(strategy=strategy).count()
    )
    values = {
        "status": StrategyExecution.Status.SUCCESS,
        "started_at": start + timedelta(minutes=5, seconds=1),
        "finished_at": start + timedelta(minutes=5, seconds=2),
        "duration_ms": 850.0,
        "drift_ms": 1000.0,
        "signal": {"signal": "LONG", "price": 0.05},
        "settings_version": 1,
        "code_version": 1,
    }
    values.update(fields)
    return StrategyExecution.objects.create(
        strategy=strategy, interval_start=start, interval_end=start + timedelta(minutes=5), **values
    )


def make_trade(subscription: Any, *, status: str = "closed", pnl: str | None = "10", **fields: Any):
    """A trade of ``subscription`` from a fresh execution of its strategy."""
    execution = make_execution(subscription.strategy)
    values = {
        "symbol": subscription.strategy.symbol,
        "side": Trade.Side.LONG,
        "status": status,
        "quantity": Decimal("2"),
        "entry_price": Decimal("0.05"),
        "entry_time": execution.finished_at,
        "entry_fee": Decimal("0.1"),
        "pnl": Decimal(pnl) if pnl is not None else None,
        "client_order_id": f"sf-{execution.pk}-{subscription.pk}-e",
    }
    if status == Trade.Status.CLOSED:
        values.update(exit_price=Decimal("0.06"), exit_time=execution.finished_at)
    values.update(fields)
    return Trade.objects.create(subscription=subscription, execution=execution, **values)


def make_order(trade: Any, *, purpose: str = OrderPurpose.entry(), **fields: Any) -> Order:
    """An order intent of ``trade`` as the order machinery records it (for reads)."""
    entry = purpose == OrderPurpose.entry()
    suffix = "e" if entry else "x"
    # An exit is sent by a later execution (the one with the exit signal).
    execution = trade.execution if entry else make_execution(trade.subscription.strategy)
    values = {
        "subscription": trade.subscription,
        "execution": execution,
        "client_order_id": f"sf-{trade.execution_id}-{trade.subscription_id}-{suffix}",
        "symbol": trade.symbol,
        "side": "buy" if (trade.side == Trade.Side.LONG) == entry else "sell",
        "amount": trade.quantity,
        "status": Order.Status.FILLED,
        "filled": trade.quantity,
        "average_price": trade.entry_price,
        "fee": Decimal("0.1"),
        "fee_currency": "BTC",
        "exchange_order_id": f"x{trade.pk}{suffix}",
        "attempts": 1,
    }
    values.update(fields)
    return Order.objects.create(trade=trade, purpose=purpose, **values)


def make_position(subscription: Any, **fields: Any) -> Position:
    values = {
        "symbol": subscription.strategy.symbol,
        "side": Position.Side.LONG,
        "quantity": Decimal("2"),
        "average_entry_price": Decimal("0.05"),
        "open_fees": Decimal("0.1"),
        "realized_pnl": Decimal("12.5"),
        "unrealized_pnl": Decimal("0.9"),
        "fees_paid": Decimal("0.3"),
        "mark_price": Decimal("0.0555"),
    }
    values.update(fields)
    return Position.objects.create(subscription=subscription, **values)


def is_registered(strategy: Any) -> bool:
    """Whether the candle registry runs ``strategy`` (it has an active subscriber)."""
    key = market_key(
        exchange=strategy.exchange, symbol=strategy.symbol, resolution=strategy.resolution
    )
    return strategy.pk in registry_strategy_ids(key=key)


def subscribe_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"mode": "paper", "capital": "1000", "risk_per_trade": "0.01"}
    payload.update(overrides)
    return payload


def admin_form_data(response: Any, **changes: Any) -> dict[str, Any]:
    """The POST data an admin change form would send as rendered, with ``changes`` applied.

    Includes the inline formsets' management forms, which every change POST needs.
    """
    data: dict[str, Any] = {}
    form = response.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value is not None:
            data[name] = value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for inline_form in formset.forms:
            for name in inline_form.fields:
                value = inline_form[name].value()
                if value is not None:
                    data[inline_form.add_prefix(name)] = value
    data.update(changes)
    return data


def admin_url(model: Any, view: str, *args: Any) -> str:
    from django.urls import reverse

    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)
