from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.types import DecimalSpec
from strategies.models import Strategy

MONEY: DecimalSpec = {"max_digits": 24, "decimal_places": 8}
PERCENT: DecimalSpec = {"max_digits": 5, "decimal_places": 2}
# The follower's own guards, each off when null: checked by the fan-out before an entry is
# sent (trades.guards); a trip is recorded (trades.models.ProtectionTrip) and notified.
PROTECTION_FIELDS = (
    "max_drawdown_pct",
    "close_on_max_drawdown",
    "daily_loss_limit_pct",
    "max_order_notional",
    "max_open_trades",
    "cooldown_after_losses",
    "cooldown_minutes",
    "slippage_cap_bps",
)


class BrokerCredential(models.Model):
    """A user's exchange API keys. Only ciphertext is stored (see subscriptions.crypto)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credentials"
    )
    exchange = models.CharField(max_length=50)
    label = models.CharField(max_length=100)
    api_key_encrypted = models.TextField()
    secret_encrypted = models.TextField()
    passphrase_encrypted = models.TextField(blank=True)
    # Shown to humans instead of the key itself.
    api_key_last4 = models.CharField(max_length=4)
    is_sandbox = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # The last failure of a request made with this credential (refused keys, keys that cannot
    # be decrypted, network errors), recorded by the loops that span tenants.
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Key custody: the key's permissions as the exchange last reported them (empty where it
    # exposes none, see key_note), what its owner was warned about, and when it was checked
    # (on adding it, then by the periodic re-check).
    permissions = models.JSONField(default=dict, blank=True)
    key_warnings = models.JSONField(default=list, blank=True)
    key_note = models.CharField(max_length=500, blank=True)
    permissions_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=("user", "label"), name="uniq_credential_label")
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.exchange}, …{self.api_key_last4})"

    @property
    def masked_api_key(self) -> str:
        return f"****{self.api_key_last4}"


def _percent_or_null(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(**{f"{name}__isnull": True})
        | (Q(**{f"{name}__gt": 0}) & Q(**{f"{name}__lte": 100})),
        name=f"{name}_in_range",
    )


def _protection_constraints() -> list[models.CheckConstraint]:
    return [
        _percent_or_null("max_drawdown_pct"),
        _percent_or_null("daily_loss_limit_pct"),
        models.CheckConstraint(
            condition=Q(max_order_notional__isnull=True) | Q(max_order_notional__gt=0),
            name="max_order_notional_positive",
        ),
        models.CheckConstraint(
            condition=Q(max_open_trades__isnull=True) | Q(max_open_trades__gte=1),
            name="max_open_trades_at_least_one",
        ),
        models.CheckConstraint(
            # N and the duration go together: one without the other means nothing.
            condition=(Q(cooldown_after_losses__isnull=True) & Q(cooldown_minutes__isnull=True))
            | (Q(cooldown_after_losses__gte=1) & Q(cooldown_minutes__gte=1)),
            name="cooldown_complete",
        ),
        models.CheckConstraint(
            condition=Q(slippage_cap_bps__isnull=True) | Q(slippage_cap_bps__gte=1),
            name="slippage_cap_positive",
        ),
    ]


class StrategySubscription(models.Model):
    class Mode(models.TextChoices):
        PAPER = "paper", "Paper"
        LIVE = "live", "Live"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"

    class MinOrderPolicy(models.TextChoices):
        SKIP = "skip", "Skip"
        BUMP_TO_MINIMUM = "bump_to_minimum", "Bump to minimum"

    class JoinPolicy(models.TextChoices):
        NEXT_SIGNAL = "next_signal", "Next signal"
        JOIN_NOW = "join_now", "Join now"

    class EntryOrderType(models.TextChoices):
        MARKET = "market", "Market"
        LIMIT = "limit", "Limit"

    class MarginMode(models.TextChoices):
        ISOLATED = "isolated", "Isolated"
        CROSS = "cross", "Cross"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions"
    )
    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="subscriptions")
    credential = models.ForeignKey(
        BrokerCredential,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="subscriptions",
    )
    mode = models.CharField(max_length=5, choices=Mode.choices, default=Mode.PAPER)
    capital = models.DecimalField(**MONEY)
    risk_per_trade = models.DecimalField(
        max_digits=6, decimal_places=5, help_text="Fraction of capital risked per trade."
    )
    leverage = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("1"))
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    settings = models.JSONField(default=dict, blank=True)
    realized_pnl = models.DecimalField(**MONEY, default=Decimal("0"))
    fees_paid = models.DecimalField(**MONEY, default=Decimal("0"))
    status_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # Live trading (issue 6).
    min_order_policy = models.CharField(
        max_length=16,
        choices=MinOrderPolicy.choices,
        default=MinOrderPolicy.SKIP,
        help_text="An order below the market's minimum: skip it, or bump it to the minimum "
        "when that stays within capital x leverage.",
    )
    join_policy = models.CharField(
        max_length=12,
        choices=JoinPolicy.choices,
        default=JoinPolicy.NEXT_SIGNAL,
        help_text="Joining while the strategy holds a position: wait for its next entry "
        "signal, or enter at the next candle close.",
    )
    entry_order_type = models.CharField(
        max_length=6,
        choices=EntryOrderType.choices,
        default=EntryOrderType.MARKET,
        help_text="Entries at market, or as a limit order at the signal's price.",
    )
    margin_mode = models.CharField(
        max_length=8,
        choices=MarginMode.choices,
        blank=True,
        help_text="Derivatives only; blank keeps the account's setting.",
    )
    # Protections (issue 14).
    max_drawdown_pct = models.DecimalField(
        **PERCENT,
        null=True,
        blank=True,
        help_text="Pause when equity falls this many percent below its peak (the peak restarts "
        "at each change of capital, risk or leverage).",
    )
    close_on_max_drawdown = models.BooleanField(
        default=False, help_text="When the maximum drawdown pauses it, also close its positions."
    )
    # The highest equity since subscribing, the last sizing change or turning max drawdown on:
    # kept by the trades app as it stores equity points, for subscriptions with a max drawdown.
    equity_peak = models.DecimalField(**MONEY, null=True, blank=True)
    daily_loss_limit_pct = models.DecimalField(
        **PERCENT,
        null=True,
        blank=True,
        help_text="No new entries for the rest of the UTC day once the PnL realized that day "
        "(net of fees) has lost this many percent of the capital.",
    )
    max_order_notional = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        help_text="An entry worth more than this (quantity x price, quote currency) is skipped.",
    )
    max_open_trades = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="No new entry while this many trades are open (or being entered) across all "
        "your subscriptions of the same mode.",
    )
    cooldown_after_losses = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="After this many losing trades or stop-outs in a row, pause entries for "
        "cooldown_minutes.",
    )
    cooldown_minutes = models.PositiveIntegerField(null=True, blank=True)
    slippage_cap_bps = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Live entries go out as limit orders at most this many basis points worse "
        "than the signal's price; an entry is skipped when the market (or, on paper, the "
        "simulated fill) is already further. Exits are never held back by it.",
    )

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            # One subscription per (user, strategy) that is not cancelled.
            models.UniqueConstraint(
                fields=("user", "strategy"),
                condition=~Q(status="cancelled"),
                name="uniq_open_subscription",
            ),
            models.CheckConstraint(condition=Q(capital__gt=0), name="capital_positive"),
            models.CheckConstraint(
                condition=Q(risk_per_trade__gt=0) & Q(risk_per_trade__lte=1),
                name="risk_per_trade_fraction",
            ),
            models.CheckConstraint(condition=Q(leverage__gte=1), name="leverage_at_least_one"),
            models.CheckConstraint(
                condition=Q(mode="paper") | Q(credential__isnull=False),
                name="live_needs_credential",
            ),
            *_protection_constraints(),
        ]
        indexes = [models.Index(fields=("strategy", "status"))]

    def __str__(self) -> str:
        return f"{self.user} → {self.strategy_id} ({self.mode}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class EquityPoint(models.Model):
    """A subscription's equity at one moment, stored as it was (never recomputed later).

    equity = capital in force at ``time`` + realized PnL since subscribing + unrealized PnL,
    all net of fees. Capital changes are written here (subscriptions.equity), fills, closes
    and daily points by the trades app; a point is written only when something changed, so a
    flat subscription costs a daily row, not one per candle.
    """

    class Kind(models.TextChoices):
        CLOSE = "close", "Candle close"
        FILL = "fill", "Fill"
        CAPITAL_CHANGE = "capital_change", "Capital change"
        DAILY = "daily", "Daily"

    # No index of its own: the two below, which start with it, serve every lookup by it.
    subscription = models.ForeignKey(
        StrategySubscription,
        on_delete=models.CASCADE,
        related_name="equity_points",
        db_index=False,
    )
    time = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    equity = models.DecimalField(**MONEY)
    capital = models.DecimalField(**MONEY, help_text="The capital in force at that time.")
    realized = models.DecimalField(**MONEY)
    unrealized = models.DecimalField(**MONEY)
    fees = models.DecimalField(**MONEY)
    # A capital change's new (and previous) sizing; empty for the other kinds.
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("time", "id")
        indexes = [
            models.Index(fields=("subscription", "time"), name="equity_sub_time"),
            # A subscription's last point (the one a new point is compared with) in one index
            # step, however long its history: ids are the order points were written in.
            models.Index(fields=("subscription", "id"), name="equity_sub_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.equity} at {self.time:%Y-%m-%d %H:%M}"
