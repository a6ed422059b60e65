from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from backtests.charts import backtest_chart
from backtests.engine import Sizing
from backtests.models import Backtest
from backtests.selectors import backtest_report, backtest_series, backtest_summary_lines
from backtests.services import Costs, Period, Subject, backtest_create, backtest_run
from core.time_utils import parse_utc_moment
from strategies.models import Strategy

CLI_OWNER = "backtest-cli"


class Command(BaseCommand):
    help = (
        "Backtest a strategy over the stored candles of its market, in the sandbox, on the "
        "paper-trading rules (sizing, fees, slippage, stops). Touches no subscriber."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        subject = parser.add_mutually_exclusive_group(required=True)
        subject.add_argument("--strategy", type=int, help="id of a published strategy")
        subject.add_argument("--code", help="a file with the strategy's code")
        parser.add_argument("--exchange", help="with --code: e.g. binance")
        parser.add_argument("--symbol", help="with --code: e.g. ETH/BTC")
        parser.add_argument("--resolution", help="with --code: e.g. 5m")
        parser.add_argument("--settings", default="{}", help="with --code: JSON settings")
        parser.add_argument("--start", help="UTC ISO 8601 (default: the first stored candle)")
        parser.add_argument("--end", help="UTC ISO 8601 (default: the last stored close)")
        parser.add_argument("--capital", default="1", help="in the quote currency (default 1)")
        parser.add_argument("--risk", default="0.01", help="fraction of capital per trade")
        parser.add_argument("--leverage", default="1")
        parser.add_argument("--fee-bps", help="per fill (default: the paper fee)")
        parser.add_argument("--slippage-bps", help="per fill (default: the paper slippage)")
        parser.add_argument(
            "--vectorised",
            action="store_true",
            help="call generate_signals once (checked for look-ahead bias on a sample)",
        )
        parser.add_argument("--owner", help=f"the user it is recorded for (default {CLI_OWNER})")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--report", help="write a self-contained HTML report here")
        parser.add_argument("--chart", help="write the chart here (.png or .svg)")

    def handle(self, *args: Any, **options: Any) -> None:
        backtest = self._create(options)
        bar = tqdm(total=backtest.candles_total, unit="candle", disable=None, file=self.stderr)
        with bar:
            backtest = backtest_run(
                backtest_id=backtest.pk, on_progress=lambda done, _: bar.update(done - bar.n)
            )
        if backtest.status != Backtest.Status.DONE:
            raise CommandError(f"backtest #{backtest.pk} failed: {backtest.error}")
        self._write_files(backtest, options)
        if options["json"]:
            self.stdout.write(json.dumps(_as_json(backtest), indent=2))
        else:
            for line in backtest_summary_lines(backtest=backtest):
                self.stdout.write(line)

    def _create(self, options: dict[str, Any]) -> Backtest:
        try:
            subject = _subject(options)
            return backtest_create(
                owner=_owner(options, subject),
                subject=subject,
                period=Period(_moment(options, "start"), _moment(options, "end")),
                sizing=Sizing(
                    _required(options, "capital"),
                    _required(options, "risk"),
                    _required(options, "leverage"),
                ),
                costs=Costs(_decimal(options, "fee_bps"), _decimal(options, "slippage_bps")),
                method=Backtest.Method.VECTORISED
                if options["vectorised"]
                else Backtest.Method.PER_CANDLE,
            )
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc

    def _write_files(self, backtest: Backtest, options: dict[str, Any]) -> None:
        if options["report"]:
            path = Path(options["report"])
            path.write_text(backtest_report(backtest=backtest))
            self.stderr.write(f"report written to {path.resolve()}")
        if options["chart"]:
            path = Path(options["chart"])
            fmt = "svg" if path.suffix.lower() == ".svg" else "png"
            path.write_bytes(backtest_chart(series=backtest_series(backtest=backtest), fmt=fmt))
            self.stderr.write(f"chart written to {path.resolve()}")


def _subject(options: dict[str, Any]) -> Subject:
    if options["strategy"] is not None:
        strategy = Strategy.objects.filter(pk=options["strategy"]).first()
        if strategy is None:
            raise CommandError(f"--strategy: no strategy #{options['strategy']}")
        return Subject(strategy=strategy)
    try:
        code = Path(options["code"]).read_text()
        settings = json.loads(options["settings"])
    except OSError as exc:
        raise CommandError(f"--code: cannot read {options['code']}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CommandError(f"--settings: not JSON: {exc}") from exc
    return Subject(
        code=code,
        settings=settings,
        exchange=options["exchange"] or "",
        symbol=options["symbol"] or "",
        resolution=options["resolution"] or "",
    )


def _owner(options: dict[str, Any], subject: Subject) -> Any:
    if options["owner"] is None and subject.strategy is not None:
        return subject.strategy.owner
    user, _ = get_user_model().objects.get_or_create(username=options["owner"] or CLI_OWNER)
    return user


def _moment(options: dict[str, Any], name: str) -> Any:
    if options[name] is None:
        return None
    try:
        return parse_utc_moment(options[name])
    except ValueError as exc:
        raise CommandError(f"--{name}: {exc}") from exc


def _decimal(options: dict[str, Any], name: str) -> Decimal | None:
    if options[name] is None:
        return None
    try:
        value = Decimal(str(options[name]))
    except InvalidOperation as exc:
        raise CommandError(f"--{name.replace('_', '-')}: not a number: {options[name]!r}") from exc
    if not value.is_finite():
        raise CommandError(f"--{name.replace('_', '-')}: not a finite number")
    return value


def _required(options: dict[str, Any], name: str) -> Decimal:
    value = _decimal(options, name)
    if value is None:
        raise CommandError(f"--{name.replace('_', '-')} is required")
    return value


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _as_json(backtest: Backtest) -> dict[str, Any]:
    return {
        "id": backtest.pk,
        "status": backtest.status,
        "metrics": backtest.metrics,
        "trades": [
            {
                "side": t.side,
                "quantity": f"{t.quantity:f}",
                "entry_time": t.entry_time.isoformat(),
                "entry_price": f"{t.entry_price:f}",
                "exit_time": t.exit_time.isoformat() if t.exit_time else None,
                "exit_price": f"{t.exit_price:f}" if t.exit_price is not None else None,
                "pnl": f"{t.pnl:f}" if t.pnl is not None else None,
                "exit_reason": t.exit_reason,
            }
            for t in backtest.trades.all()
        ],
        "gaps": backtest.gaps,
        "lookahead": backtest.lookahead,
    }
