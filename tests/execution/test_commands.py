from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from markets.models import Candle
from tests.factories import StrategyFactory, flat_candles, load_candles, subscribe

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles" / "ETH_BTC-5m.json"


@pytest.mark.django_db
def test_import_candles_is_idempotent(tmp_path):
    # given a ccxt OHLCV file
    path = tmp_path / "c.json"
    path.write_text(json.dumps(flat_candles(start_ms=1515560100000, count=12)))
    args = [str(path), "--exchange", "binance", "--symbol", "ETH/BTC", "--resolution", "5m"]
    out = StringIO()
    # when it is imported twice
    call_command("import_candles", *args, stdout=out)
    call_command("import_candles", *args, stdout=out)
    # then the store holds each candle once
    assert Candle.objects.count() == 12
    assert "imported 12 new" in out.getvalue() and "imported 0 new" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.skipif(not SHARED.exists(), reason="shared market data not present")
def test_import_real_market_data_keeps_decimals_exact():
    call_command(
        "import_candles",
        str(SHARED),
        "--exchange",
        "binance",
        "--symbol",
        "ETH/BTC",
        "--resolution",
        "5m",
        stdout=StringIO(),
    )
    rows = json.loads(SHARED.read_text())
    first = Candle.objects.order_by("open_time").first()
    assert Candle.objects.count() == len(rows) == 5760
    assert str(first.close.normalize()) == str(rows[0][4])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read"),
        ('{"a": 1}', "JSON array"),
        ("[[1, 2]]", "expected"),
        ("[[1515560100001, 1, 1, 1, 1, 1]]", "boundary"),
        ('[[1515560100000, "x", 1, 1, 1, 1]]', "bad"),
    ],
)
def test_import_candles_rejects_bad_files_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command(
            "import_candles", str(path), "--exchange", "x", "--symbol", "A/B", "--resolution", "5m"
        )
    assert not Candle.objects.exists()


@pytest.mark.django_db
def test_import_candles_rejects_unknown_resolution_and_missing_file(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command(
            "import_candles",
            str(tmp_path / "nope.json"),
            "--exchange",
            "x",
            "--symbol",
            "A/B",
            "--resolution",
            "5m",
        )
    path = tmp_path / "c.json"
    path.write_text("[]")
    with pytest.raises(CommandError, match="unknown resolution"):
        call_command(
            "import_candles", str(path), "--exchange", "x", "--symbol", "A/B", "--resolution", "7m"
        )


@pytest.mark.django_db(transaction=True)
def test_execute_strategy_prints_the_execution_as_json():
    # given a strategy with a subscriber and candles
    load_candles(rows=flat_candles(start_ms=1515560100000, count=10))
    strategy = StrategyFactory(settings={"signal": "LONG"})
    subscribe(strategy)
    out = StringIO()
    # when run for the close at 05:20 with the fan-out in process
    call_command(
        "execute_strategy",
        str(strategy.pk),
        "--close-time",
        "2018-01-10T05:20:00Z",
        "--inline",
        stdout=out,
    )
    # then it prints the execution, and the subscriber traded
    printed = json.loads(out.getvalue())
    assert printed["status"] == "success" and printed["trigger"] == "manual"
    assert printed["interval_start"].startswith("2018-01-10 05:15")
    assert printed["trades_generated"] == 1


@pytest.mark.django_db
def test_execute_strategy_reports_bad_input():
    with pytest.raises(CommandError, match="no strategy"):
        call_command("execute_strategy", "999999")
    strategy = StrategyFactory()
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("execute_strategy", str(strategy.pk), "--close-time", "yesterday")
    with pytest.raises(CommandError, match="timezone"):
        call_command("execute_strategy", str(strategy.pk), "--close-time", "2018-01-10T05:20:00")
