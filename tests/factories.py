from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.services import Costs, Period, Subject, backtest_create
from markets.candles import candles_import
from markets.market_data import market_file
from strategies.models import Strategy, StrategyExecution, StrategyVersion
from subscriptions.models import StrategySubscription
from subscriptions.services import subscription_create
from tests.strategy_code import SCRIPTED


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")


class StrategyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Strategy
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"strategy {n}")
    code = SCRIPTED
    lookback = 5
    timeout_s = 10.0
    exchange = "binance"
    symbol = "ETH/BTC"
    resolution = "5m"

    @factory.post_generation
    def version(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            StrategyVersion.objects.create(
                strategy=self, version=1, code=self.code, lookback=self.lookback
            )


def subscribe(
    strategy: Strategy,
    *,
    user=None,
    capital: str = "1000",
    risk: str = "0.01",
    leverage: str = "1",
) -> StrategySubscription:
    """Subscribe through the service, as the API does, so counters and registry stay right."""
    return subscription_create(
        user=user or UserFactory(),
        strategy=strategy,
        capital=Decimal(capital),
        risk_per_trade=Decimal(risk),
        leverage=Decimal(leverage),
    )


def flat_candles(*, start_ms: int, count: int, step_ms: int = 300_000, price: float = 0.05):
    """Deterministic candles: a gentle ramp so prices differ row to row."""
    rows = []
    for i in range(count):
        close = price * (1 + i * 0.001)
        rows.append([start_ms + i * step_ms, close, close * 1.002, close * 0.998, close, 10.0 + i])
    return rows


def load_candles(*, exchange="binance", symbol="ETH/BTC", resolution="5m", rows) -> int:
    return candles_import(exchange=exchange, symbol=symbol, resolution=resolution, rows=rows)


class StrategyExecutionFactory(factory.django.DjangoModelFactory):
    """A running execution, as execution_run claims it before the strategy runs."""

    class Meta:
        model = StrategyExecution

    strategy = factory.SubFactory(StrategyFactory)
    interval_start = factory.Sequence(
        lambda n: datetime(2018, 1, 10, tzinfo=UTC) + timedelta(minutes=5 * n)
    )
    interval_end = factory.LazyAttribute(lambda e: e.interval_start + timedelta(minutes=5))
    started_at = factory.LazyFunction(timezone.now)


# --- backtests -------------------------------------------------------------------------------
def stored_candles(
    *, exchange="binance", symbol="ETH/BTC", resolution="5m", count: int = 300
) -> list[list]:
    """The first ``count`` real candles of the market's file in MARKET_DATA_DIR, stored."""
    rows = json.loads(market_file(symbol=symbol, resolution=resolution).read_text())[:count]
    load_candles(exchange=exchange, symbol=symbol, resolution=resolution, rows=rows)
    return rows


def backtest_of(
    *,
    owner,
    strategy: Strategy | None = None,
    code: str = "",
    market: dict[str, str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Backtest:
    """A queued backtest of a strategy, or of code on ``market`` (binance ETH/BTC 5m), as the
    API records it: through the service, on the candles stored."""
    market = market or {"exchange": "binance", "symbol": "ETH/BTC", "resolution": "5m"}
    subject = Subject(strategy=strategy) if strategy else Subject(code=code, **market)
    return backtest_create(
        owner=owner,
        subject=subject,
        period=Period(start, end),
        sizing=Sizing(Decimal("1"), Decimal("0.01"), Decimal("1")),
        costs=Costs(Decimal("10"), Decimal("5")),
    )


class BacktestFactory(factory.django.DjangoModelFactory):
    """A backtest row as backtest_create records it (queued), without candles behind it: for
    reads and refusals, never to run."""

    class Meta:
        model = Backtest

    owner = factory.SubFactory(UserFactory)
    code = SCRIPTED
    exchange = "binance"
    symbol = "ETH/BTC"
    resolution = "5m"
    start = datetime(2018, 1, 10, tzinfo=UTC)
    end = datetime(2018, 1, 11, tzinfo=UTC)
    lookback = 5
    capital = Decimal("1")
    risk_per_trade = Decimal("0.01")
    leverage = Decimal("1")
    fee_bps = Decimal("10")
    slippage_bps = Decimal("5")
    candles_total = 288
