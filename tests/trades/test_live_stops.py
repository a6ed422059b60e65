"""Stop loss and take profit resting on the exchange (an OCO list), through real ccxt."""

from __future__ import annotations

from decimal import Decimal

import pytest

from strategies.services import strategy_update_settings
from tests.factories import StrategyFactory, subscribe
from tests.trades.live import live_trader
from tests.trades.test_live_orders import STOPS, _market_that_moves, run_close
from trades.models import Order, Position, Trade
from trades.services import orders_sync_open

pytestmark = pytest.mark.django_db(transaction=True)


def _hold(strategy, sl: float, tp: float) -> None:
    strategy_update_settings(strategy=strategy, settings={"signal": "HOLD", "sl": sl, "tp": tp})


def test_protective_orders_rest_on_the_exchange_after_a_live_entry(sim):
    # given a strategy whose long carries a 1% stop and a 5% target
    closes = _market_that_moves(0.05)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    trader = live_trader(sim, strategy)

    # when the entry fills
    entry = run_close(sim, strategy, closes[9])

    # then its stop and target rest on the exchange as one OCO list, under deterministic ids
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open"
    stop = Order.objects.get(purpose=f"stop:{trade.pk}")
    take = Order.objects.get(purpose=f"take:{trade.pk}")
    sub = trader.subscription.pk
    assert stop.client_order_id == f"sf-{entry.pk}-{sub}-s{trade.pk}"
    assert take.client_order_id == f"sf-{entry.pk}-{sub}-t{trade.pk}"
    assert (stop.status, take.status) == ("open", "open")
    assert stop.side == take.side == "sell" and stop.amount == take.amount == trade.quantity
    on_exchange = {o["client_order_id"]: o for o in sim.orders()}
    assert len(on_exchange) == 3
    resting_stop, resting_take = (
        on_exchange[stop.client_order_id],
        on_exchange[take.client_order_id],
    )
    assert (resting_stop["type"], resting_take["type"]) == ("STOP_LOSS", "TAKE_PROFIT")
    assert Decimal(resting_stop["stop_price"]) == Decimal("0.0495")
    assert Decimal(resting_take["stop_price"]) == Decimal("0.0525")
    assert resting_stop["order_list_id"] == resting_take["order_list_id"] != -1
    assert resting_stop["api_key"] == trader.api_key
    assert stop.exchange_order_id == str(resting_stop["order_id"])


def test_stop_hit_fills_on_the_exchange_and_the_sync_closes_the_trade(sim):
    # given an open live long with its stop and target on the exchange
    closes = _market_that_moves(0.049)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    trader = live_trader(sim, strategy)
    entry = run_close(sim, strategy, closes[9])
    trade = Trade.objects.get(execution=entry)

    # when the market falls through the stop and the candle closes
    _hold(strategy, 0.01, 0.05)
    run_close(sim, strategy, closes[11])

    # then the exchange filled the stop and expired the target; the platform did not exit
    on_exchange = {o["client_order_id"]: o for o in sim.orders()}
    stop = Order.objects.get(purpose=f"stop:{trade.pk}")
    take = Order.objects.get(purpose=f"take:{trade.pk}")
    assert on_exchange[stop.client_order_id]["status"] == "FILLED"
    assert on_exchange[take.client_order_id]["status"] == "EXPIRED"
    assert len(on_exchange) == 3  # no exit order of the platform's own
    trade.refresh_from_db()
    assert trade.status == "open"  # the exchange is the source of truth until the sync

    # when the order sync runs
    orders_sync_open()

    # then the trade is closed at the stop with the exchange's fees, the target is off
    trade.refresh_from_db()
    stop.refresh_from_db()
    take.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    assert trade.exit_client_order_id == stop.client_order_id
    assert trade.exit_price == Decimal("0.0495") == stop.average_price
    assert stop.status == "filled" and take.status in ("expired", "cancelled")
    assert trade.exit_fee == Decimal(on_exchange[stop.client_order_id]["fee"]) > 0
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8")) and trade.pnl < 0
    position = Position.objects.get(subscription=trader.subscription)
    assert (position.side, position.quantity, position.realized_pnl) == ("flat", 0, trade.pnl)
    trader.subscription.refresh_from_db()
    assert trader.subscription.realized_pnl == trade.pnl

    # and a second sync changes nothing
    orders_sync_open()
    assert Trade.objects.get(pk=trade.pk).pnl == trade.pnl
    assert len(sim.orders()) == 3


def test_exit_signal_cancels_resting_protective_orders_before_exiting(sim):
    # given an open live long with its stop and target on the exchange
    closes = _market_that_moves(0.05)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    live_trader(sim, strategy)
    entry = run_close(sim, strategy, closes[9])
    trade = Trade.objects.get(execution=entry)

    # when an EXIT_LONG signal arrives
    strategy_update_settings(
        strategy=strategy, settings={"signal": "EXIT_LONG", "sl": 0.01, "tp": 0.05}
    )
    exit_execution = run_close(sim, strategy, closes[10])
    assert exit_execution.status == "success", exit_execution.error

    # then the stop and target were cancelled and exactly one exit order went out
    on_exchange = sim.orders()
    protective = [o for o in on_exchange if o["type"] in ("STOP_LOSS", "TAKE_PROFIT")]
    assert sorted(o["status"] for o in protective) == ["CANCELED", "CANCELED"]
    exits = [o for o in on_exchange if o["side"] == "SELL" and o["type"] == "MARKET"]
    assert len(exits) == 1 and exits[0]["status"] == "FILLED"
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.exit_execution_id == exit_execution.pk
    assert trade.exit_client_order_id == exits[0]["client_order_id"]
    assert set(
        Order.objects.filter(trade=trade)
        .exclude(purpose__in=("entry",))
        .values_list("purpose", "status")
    ) == {
        (f"stop:{trade.pk}", "cancelled"),
        (f"take:{trade.pk}", "cancelled"),
        (f"exit:{trade.pk}", "filled"),
    }


def test_paper_trades_keep_the_candle_close_check(sim):
    # given a paper subscriber on a strategy with stops
    closes = _market_that_moves(0.049)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    subscription = subscribe(strategy, capital="1")

    # when it enters and the market falls through the stop
    entry = run_close(sim, strategy, closes[9])
    _hold(strategy, 0.01, 0.05)
    checked = run_close(sim, strategy, closes[11])

    # then nothing rested anywhere: the candle close closed it
    trade = Trade.objects.get(execution=entry, subscription=subscription)
    assert (
        not Order.objects.filter(trade=trade)
        .exclude(purpose="entry")
        .exclude(purpose=f"exit:{trade.pk}")
    )
    assert trade.status == "closed" and trade.exit_execution_id == checked.pk
    assert sim.orders() == []


def _exit_while_the_cancel_fails(sim, *, last: float):
    """An open live long with its OCO resting, then an EXIT_LONG whose cancels both fail."""
    closes = _market_that_moves(last)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    trader = live_trader(sim, strategy)
    entry = run_close(sim, strategy, closes[9])
    trade = Trade.objects.get(execution=entry)
    assert Order.objects.filter(trade=trade, purpose__in=_legs(trade), status="open").count() == 2
    sim.faults(next={"fail": 2}, keys=[trader.api_key])  # a 503 on each leg's cancel
    strategy_update_settings(
        strategy=strategy, settings={"signal": "EXIT_LONG", "sl": 0.01, "tp": 0.05}
    )
    exit_execution = run_close(sim, strategy, closes[10])
    sim.faults(keys=[])
    assert exit_execution.status == "success", exit_execution.error
    return strategy, trader, trade, exit_execution, closes


def _legs(trade: Trade) -> list[str]:
    return [f"stop:{trade.pk}", f"take:{trade.pk}"]


def test_exit_is_held_while_a_protective_cancel_is_unconfirmed(sim):
    # given an open live long whose stop and target cancels fail when an exit signal arrives
    strategy, _, trade, exit_execution, closes = _exit_while_the_cancel_fails(sim, last=0.05)

    # then no exit order went out, and the exit is recorded as held on its intent and trade
    on_exchange = sim.orders()
    assert len(on_exchange) == 3
    assert sorted(o["status"] for o in on_exchange if o["type"] != "MARKET") == ["NEW", "NEW"]
    held = Order.objects.get(purpose=f"exit:{trade.pk}")
    assert held.status == "held" and held.error.startswith("held: protective order state")
    assert held.attempts == 0 and held.execution_id == exit_execution.pk
    trade.refresh_from_db()
    assert trade.status == "open" and trade.exit_execution_id == exit_execution.pk
    assert trade.error.startswith("exit held")

    # when a second exit signal arrives while the first is held (its cancels go through)
    second = run_close(sim, strategy, closes[11])
    assert second.status == "success", second.error

    # then it sends no exit of its own: the held one keeps the trade's exit claim
    assert not [o for o in sim.orders() if o["type"] == "MARKET" and o["side"] == "SELL"]
    assert list(
        Order.objects.filter(trade=trade, purpose__startswith="exit:").values_list(
            "execution_id", "status"
        )
    ) == [(exit_execution.pk, "held")]

    # and the next sync sends exactly that one
    orders_sync_open()
    exits = [o for o in sim.orders() if o["type"] == "MARKET" and o["side"] == "SELL"]
    assert len(exits) == 1 and exits[0]["client_order_id"] == held.client_order_id
    assert Trade.objects.get(pk=trade.pk).status == "closed"


def test_held_exit_is_sent_once_the_sync_cancels_the_protective_orders(sim):
    # given an exit held because the protective cancels failed
    _, trader, trade, exit_execution, _ = _exit_while_the_cancel_fails(sim, last=0.05)

    # when the order sync runs (the cancels now go through)
    orders_sync_open()

    # then the legs are cancelled and exactly one exit order went out, under its own id
    on_exchange = sim.orders()
    protective = [o for o in on_exchange if o["type"] in ("STOP_LOSS", "TAKE_PROFIT")]
    assert sorted(o["status"] for o in protective) == ["CANCELED", "CANCELED"]
    exits = [o for o in on_exchange if o["side"] == "SELL" and o["type"] == "MARKET"]
    assert len(exits) == 1 and exits[0]["status"] == "FILLED"
    sub = trader.subscription.pk
    assert exits[0]["client_order_id"] == f"sf-{exit_execution.pk}-{sub}-x{trade.pk}"
    exit_order = Order.objects.get(purpose=f"exit:{trade.pk}")
    assert exit_order.status == "filled" and exit_order.attempts == 1

    # and the trade is closed by the exit signal with the exchange's price and fees
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.exit_execution_id == exit_execution.pk
    assert trade.metadata["exit_reason"] == "exit signal" and trade.error == ""
    assert trade.exit_price == exit_order.average_price == Decimal("0.05")
    assert trade.exit_fee == Decimal(exits[0]["fee"]) > 0
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8"))
    position = Position.objects.get(subscription=trader.subscription)
    assert (position.side, position.quantity, position.realized_pnl) == ("flat", 0, trade.pnl)

    # and a second sync sends nothing more
    orders_sync_open()
    assert len(sim.orders()) == 4
    assert Trade.objects.get(pk=trade.pk).pnl == trade.pnl


def test_held_exit_is_skipped_when_a_protective_order_filled_meanwhile(sim):
    # given an exit held because the protective cancels failed
    strategy, trader, trade, _, closes = _exit_while_the_cancel_fails(sim, last=0.049)

    # when the market falls through the stop before the sync runs
    _hold(strategy, 0.01, 0.05)
    run_close(sim, strategy, closes[11])
    orders_sync_open()

    # then no exit order went out: the stop closed the trade, the held exit is skipped
    on_exchange = {o["client_order_id"]: o for o in sim.orders()}
    assert len(on_exchange) == 3
    stop = Order.objects.get(purpose=f"stop:{trade.pk}")
    assert stop.status == "filled" and on_exchange[stop.client_order_id]["status"] == "FILLED"
    held = Order.objects.get(purpose=f"exit:{trade.pk}")
    assert held.status == "skipped" and held.attempts == 0
    assert held.error == "not sent: the trade was closed by its stop loss on the exchange"
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.metadata["exit_reason"] == "stop loss"
    assert trade.exit_client_order_id == stop.client_order_id
    assert trade.exit_price == Decimal("0.0495")
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8")) and trade.pnl < 0
    position = Position.objects.get(subscription=trader.subscription)
    assert (position.side, position.quantity, position.realized_pnl) == ("flat", 0, trade.pnl)

    # and a second sync sends nothing
    orders_sync_open()
    assert len(sim.orders()) == 3


def test_exit_held_while_the_oco_answer_was_lost_goes_out_after_the_sync(sim):
    # given a live long whose OCO list was accepted but its answer lost (legs unknown here)
    closes = _market_that_moves(0.05)
    sim.refresh()
    strategy = StrategyFactory(code=STOPS, settings={"signal": "LONG", "sl": 0.01, "tp": 0.05})
    trader = live_trader(sim, strategy)
    sim.faults(next={"timeout_after_accept": 2}, keys=[trader.api_key])  # the entry, the OCO
    entry = run_close(sim, strategy, closes[9])
    sim.faults(keys=[])
    trade = Trade.objects.get(execution=entry)
    assert trade.status == "open"
    legs = Order.objects.filter(trade=trade, purpose__in=_legs(trade))
    assert sorted(legs.values_list("status", flat=True)) == ["unknown", "unknown"]

    # when an exit signal arrives
    strategy_update_settings(
        strategy=strategy, settings={"signal": "EXIT_LONG", "sl": 0.01, "tp": 0.05}
    )
    exit_execution = run_close(sim, strategy, closes[10])

    # then nothing is sent (the legs may rest on the exchange): the exit is held
    held = Order.objects.get(purpose=f"exit:{trade.pk}")
    assert held.status == "held" and held.execution_id == exit_execution.pk
    assert not [o for o in sim.orders() if o["type"] == "MARKET" and o["side"] == "SELL"]

    # when the sync finds the legs, cancels them and sends the held exit
    orders_sync_open()

    # then exactly one exit order went out and the trade is closed with its PnL
    on_exchange = sim.orders()
    protective = [o for o in on_exchange if o["type"] in ("STOP_LOSS", "TAKE_PROFIT")]
    assert sorted(o["status"] for o in protective) == ["CANCELED", "CANCELED"]
    exits = [o for o in on_exchange if o["type"] == "MARKET" and o["side"] == "SELL"]
    assert len(exits) == 1 and exits[0]["client_order_id"] == held.client_order_id
    trade.refresh_from_db()
    assert trade.status == "closed" and trade.exit_price == Decimal("0.05")
    expected = (trade.exit_price - trade.entry_price) * trade.quantity - trade.fees
    assert trade.pnl == expected.quantize(Decimal("1e-8"))
