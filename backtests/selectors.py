"""Reads of backtests: a user's own, and a stored result as the values figures are drawn from."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from backtests.models import Backtest, BacktestTrade
from backtests.report import backtest_report_html
from backtests.results import BacktestSeries, SimTrade, Skip
from core.time_utils import ms_to_datetime, parse_utc_moment
from markets.symbols import symbol_quote


def backtest_list_owned(*, user: AbstractBaseUser) -> QuerySet[Backtest]:
    """A user's backtests, newest first: another user's are never listed."""
    return Backtest.objects.filter(owner_id=user.pk).select_related("strategy")


def backtest_get_owned(*, user: AbstractBaseUser, backtest_id: int) -> Backtest:
    """One of the user's backtests; anyone else's is a 404, as if it did not exist."""
    backtest = backtest_list_owned(user=user).filter(pk=backtest_id).first()
    if backtest is None:
        raise Http404("No such backtest.")
    return backtest


def backtest_series(*, backtest: Backtest) -> BacktestSeries:
    """The stored result as the plain values metrics, charts and reports read."""
    stored = backtest.series or {}
    return BacktestSeries(
        resolution=backtest.resolution,
        capital=backtest.capital,
        quote=backtest_quote(backtest=backtest),
        times=[ms_to_datetime(ms) for ms in stored.get("times", [])],
        closes=[Decimal(c) for c in stored.get("closes", [])],
        equity=[Decimal(e) for e in stored.get("equity", [])],
        trades=[_sim_trade(t) for t in backtest.trades.all()],
        skips=[
            Skip(time=parse_utc_moment(s["time"]), signal=s["signal"], reason=s["reason"])
            for s in backtest.skips or []
        ],
    )


def backtest_quote(*, backtest: Backtest) -> str:
    """The currency money figures are in: the market's quote (``ETH/BTC`` → ``BTC``)."""
    return symbol_quote(backtest.symbol)


def _sim_trade(row: BacktestTrade) -> SimTrade:
    return SimTrade(
        side=row.side,
        quantity=row.quantity,
        entry_time=row.entry_time,
        entry_price=row.entry_price,
        entry_fee=row.entry_fee,
        stop_loss=row.stop_loss,
        take_profit=row.take_profit,
        exit_time=row.exit_time,
        exit_price=row.exit_price,
        exit_fee=row.exit_fee,
        pnl=row.pnl,
        exit_reason=row.exit_reason,
        metadata=row.metadata,
    )


def backtest_details(*, backtest: Backtest) -> dict[str, str]:
    """What was tested, how: the head of a report."""
    subject = (
        f"#{backtest.strategy_id} {backtest.strategy.name} (code v{backtest.code_version})"
        if backtest.strategy is not None
        else "code sent with the request"
    )
    quote = backtest_quote(backtest=backtest)
    return {
        "strategy": subject,
        "market": _market(backtest),
        "period": f"{backtest.start.isoformat()} → {backtest.end.isoformat()}",
        "candles": f"{backtest.candles_done} traded, LOOKBACK {backtest.lookback} for warm-up",
        "sizing": (
            f"capital {_plain(backtest.capital)} {quote}, risk "
            f"{_plain(backtest.risk_per_trade * 100)} % per trade, "
            f"leverage {_plain(backtest.leverage)}x"
        ),
        "costs": (
            f"fee {_plain(backtest.fee_bps)} bps, slippage {_plain(backtest.slippage_bps)} bps "
            "per fill"
        ),
        "method": Backtest.Method(backtest.method).label,
        "sandbox": backtest.sandbox_isolation or "-",
    }


def _market(backtest: Backtest) -> str:
    return f"{backtest.exchange} {backtest.symbol} {backtest.resolution}"


def backtest_warnings(*, backtest: Backtest) -> list[str]:
    return [str(w) for w in (backtest.metrics or {}).get("warnings", [])]


def backtest_report(*, backtest: Backtest) -> str:
    """The self-contained HTML report of a finished backtest."""
    return backtest_report_html(
        series=backtest_series(backtest=backtest),
        metrics=backtest.metrics,
        title=f"Backtest #{backtest.pk}: {_market(backtest)}",
        details=backtest_details(backtest=backtest),
        warnings=backtest_warnings(backtest=backtest),
    )


def backtest_summary_lines(*, backtest: Backtest) -> list[str]:
    """A finished backtest in a few lines, for a terminal."""
    m: dict[str, Any] = backtest.metrics
    quote = backtest_quote(backtest=backtest)
    lines = [
        f"backtest #{backtest.pk}: "
        + "; ".join(f"{k} {v}" for k, v in backtest_details(backtest=backtest).items())
    ]
    hold = _pct(m.get("buy_and_hold_return_pct"))
    lines.append(
        f"return {_pct(m.get('net_return_pct'))} (buy and hold {hold}), "
        f"max drawdown {_pct(m.get('max_drawdown_pct'))}, Sharpe {m.get('sharpe')}, "
        f"Sortino {m.get('sortino')}, win rate {_pct(m.get('win_rate_pct'))}, "
        f"profit factor {m.get('profit_factor')}"
    )
    lines.append(
        f"trades {m.get('trades')} closed, {m.get('open_trades')} open; exposure "
        f"{_pct(m.get('exposure_pct'))}; fees {m.get('fees_paid')} {quote}; final equity "
        f"{m.get('final_equity')} {quote}; {m.get('skipped_signals', 0)} signals skipped"
    )
    lines += [f"warning: {w}" for w in backtest_warnings(backtest=backtest)]
    return lines


def _plain(value: Decimal) -> str:
    """A decimal as people write it: 0.5, 2, 1.25 (not 0.50000000 or 1E+1)."""
    return f"{value.normalize():f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{Decimal(str(value)):.2f} %"
