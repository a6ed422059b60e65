"""bench_reconcile: how long a reconciliation of N live credentials takes against the simulator.

N users, each with a credential (an account on the simulator) and a live subscription holding
a position on a market of the bench's own; ``--diverge`` of the accounts hold another quantity
than the platform. The reconciliation runs in this process, one batch of
``RECONCILE_BATCH_SIZE`` credentials after the other as one worker would, through the real
hub, ccxt and the Redis rate limiter. Printed: the time, the requests, the divergences found,
the *floor* the exchange's rate allows (requests beyond the burst / rate), and the simulator's
own count of the most requests it saw in one second, overall and for one key, against the
limits.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model

from strategies.models import Strategy, StrategyVersion
from strategies.services import strategy_registry_sync
from subscriptions.models import BrokerCredential, StrategySubscription
from subscriptions.services import credential_create, subscription_create
from tooling.bench_fanout import CODE, EXCHANGE, RESOLUTION, SYMBOL, _load_market
from tooling.live_processes import simulator_start
from tooling.processes import ManageProcess, worker_env
from tooling.simulator.client import SimulatorClient
from trades.custody import credential_batches
from trades.models import Divergence, Position
from trades.reconcile import ReconcileOutcome, reconcile_credentials

HELD = Decimal("0.2")
BASE = SYMBOL.split("/")[0]


@dataclass
class ReconcileBench:
    credentials: int
    diverging: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    strategy: Strategy | None = None
    sim: SimulatorClient | None = None
    process: ManageProcess | None = None


@dataclass
class ReconcileFigures:
    seconds: float
    outcome: ReconcileOutcome
    floor_s: float
    rates: dict[str, float]

    def lines(self) -> list[str]:
        o, r = self.outcome, self.rates
        return [
            f"reconciled {o.credentials} credentials in {self.seconds:.2f} s "
            f"({o.credentials / self.seconds:.0f} credentials/s), {o.requests} requests, "
            f"{o.failed} failed; divergences opened {o.opened}",
            f"floor at the exchange's rate ({settings.EXCHANGE_RATE_PER_EXCHANGE:g}/s, burst "
            f"included): {self.floor_s:.2f} s",
            f"most requests the exchange saw in one second: {r['peak_per_window']} (limit "
            f"{_window_limit(settings.EXCHANGE_RATE_PER_EXCHANGE):g}), for one key "
            f"{r['peak_per_key_per_window']} (limit "
            f"{_window_limit(settings.EXCHANGE_RATE_PER_CREDENTIAL):g})",
        ]

    @property
    def within_limits(self) -> bool:
        r = self.rates
        return r["peak_per_window"] <= _window_limit(settings.EXCHANGE_RATE_PER_EXCHANGE) and r[
            "peak_per_key_per_window"
        ] <= _window_limit(settings.EXCHANGE_RATE_PER_CREDENTIAL)


def _window_limit(rate: float) -> float:
    """The most a token bucket of this rate (burst = rate) grants in one second."""
    return max(1.0, rate) + rate


def bench_start(*, credentials: int, diverging: int, port: int) -> ReconcileBench:
    run = ReconcileBench(credentials=credentials, diverging=diverging)
    url = f"http://127.0.0.1:{port}"
    settings.EXCHANGE_URL_OVERRIDES = {**settings.EXCHANGE_URL_OVERRIDES, EXCHANGE: url}
    env = worker_env(EXCHANGE_URL_OVERRIDES=f"{EXCHANGE}={url}")
    closes = _load_market()
    run.process = simulator_start(
        port=port, env=env, log_path=settings.VAR_DIR / "bench" / f"simulator-{port}.log"
    )
    run.sim = SimulatorClient(url)
    run.sim.clock(closes[-1])
    _create(run)
    return run


def _create(run: ReconcileBench) -> None:
    users_model = get_user_model()
    author, _ = users_model.objects.get_or_create(username=f"bench-author-{run.tag}")
    # Never run: the rows a subscription needs, without the deploy's dry run.
    run.strategy = Strategy.objects.create(
        owner=author,
        name=f"bench reconcile {run.tag}",
        code=CODE,
        exchange=EXCHANGE,
        symbol=SYMBOL,
        resolution=RESOLUTION,
        settings={"signal": "HOLD"},
    )
    StrategyVersion.objects.create(strategy=run.strategy, version=1, code=CODE, lookback=5)
    users = users_model.objects.bulk_create(
        [users_model(username=f"bench-r-{run.tag}-{i}") for i in range(run.credentials)]
    )
    accounts, positions = [], []
    for i, user in enumerate(users):
        api_key, secret = f"bench-{uuid.uuid4().hex[:20]}", uuid.uuid4().hex
        held = HELD / 2 if i < run.diverging else HELD
        accounts.append(
            {"api_key": api_key, "secret": secret, "balances": {"BTC": "1", BASE: str(held)}}
        )
        credential = credential_create(
            user=user, exchange=EXCHANGE, label="bench", api_key=api_key, secret=secret
        )
        sub = subscription_create(
            user=user,
            strategy=run.strategy,
            capital=Decimal("1"),
            risk_per_trade=Decimal("0.01"),
            mode=StrategySubscription.Mode.LIVE,
            credential=credential,
        )
        positions.append(Position(subscription=sub, symbol=SYMBOL, side="long", quantity=HELD))
    Position.objects.bulk_create(positions)
    assert run.sim is not None
    run.sim.accounts(accounts)


def bench_run(run: ReconcileBench) -> ReconcileFigures:
    """One reconciliation of every live credential of the bench, batch after batch."""
    assert run.strategy is not None and run.sim is not None
    ours = set(
        StrategySubscription.objects.filter(strategy=run.strategy).values_list(
            "credential_id", flat=True
        )
    )
    batches = [
        [c for c in batch if c in ours]
        for batch in credential_batches(size=settings.RECONCILE_BATCH_SIZE)
    ]
    total = ReconcileOutcome()
    started = time.perf_counter()
    for batch in batches:
        if batch:
            _add(total, reconcile_credentials(credential_ids=batch))
    seconds = time.perf_counter() - started
    burst = max(1.0, settings.EXCHANGE_RATE_PER_EXCHANGE)
    floor = max(0.0, total.requests - burst) / settings.EXCHANGE_RATE_PER_EXCHANGE
    return ReconcileFigures(seconds, total, floor, run.sim.request_rates())


def _add(total: ReconcileOutcome, part: ReconcileOutcome) -> None:
    for name in ("credentials", "requests", "failed", "opened", "updated", "resolved"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


def bench_stop(run: ReconcileBench, *, keep: bool) -> None:
    if run.process is not None:
        run.process.stop()
    if run.strategy is None or keep:
        return
    strategy_id = run.strategy.pk
    Strategy.objects.filter(pk=strategy_id).update(status=Strategy.Status.RETIRED)
    strategy_registry_sync(strategy_id=strategy_id)
    subscriptions = StrategySubscription.objects.filter(strategy_id=strategy_id)
    Divergence.objects.filter(subscription__in=subscriptions).delete()
    credentials = list(subscriptions.values_list("credential_id", flat=True))
    users = list(subscriptions.values_list("user_id", flat=True))
    subscriptions.delete()
    BrokerCredential.objects.filter(pk__in=credentials).delete()
    StrategyVersion.objects.filter(strategy_id=strategy_id).delete()
    owner = run.strategy.owner_id
    Strategy.objects.filter(pk=strategy_id).delete()
    get_user_model().objects.filter(pk__in=[*users, owner]).delete()
