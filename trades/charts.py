"""A subscription's equity curve as a picture: the curve, and its drawdown below it.

Drawn with matplotlib's object API (``Figure`` and its Agg canvas), never pyplot: pyplot keeps
global state, which is not safe in a web process serving many requests.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from subscriptions.models import EquityPoint

ImageFormat = Literal["png", "svg"]


def _drawdown_pct(points: Sequence[EquityPoint]) -> list[float]:
    """Each point's fall below the running peak of equity, in percent (0 at a new peak)."""
    peak = 0.0
    falls = []
    for point in points:
        equity = float(point.equity)
        peak = max(peak, equity)
        falls.append(-100 * (peak - equity) / peak if peak > 0 else 0.0)
    return falls


def equity_chart(
    *, points: Sequence[EquityPoint], currency: str, title: str, fmt: ImageFormat
) -> bytes:
    """The chart as PNG or SVG bytes; an empty curve still gives a (labelled) picture."""
    figure = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    curve, drawdown = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)}, squeeze=True
    )
    times = [point.time for point in points]
    curve.step(times, [float(p.equity) for p in points], where="post", color="tab:blue")
    curve.set_title(title)
    curve.set_ylabel(f"equity ({currency})")
    curve.grid(alpha=0.3)
    drawdown.fill_between(times, _drawdown_pct(points), step="post", color="tab:red", alpha=0.4)
    drawdown.set_ylabel("drawdown %")
    drawdown.grid(alpha=0.3)
    if not points:
        curve.text(0.5, 0.5, "no equity recorded yet", ha="center", transform=curve.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    return buffer.getvalue()
