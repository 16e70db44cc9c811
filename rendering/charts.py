"""The picture posted with an automatic rollback: canary vs stable over the step (pure: data in,
PNG bytes out; matplotlib's Agg backend, no display, nothing written to disk)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Series = Sequence[tuple[float, float]]  # (unix time, value)

COLOURS = {"canary": "#d62728", "stable": "#1f77b4"}


@dataclass(frozen=True)
class RollbackChart:
    """What the chart shows: error rate (%) and p99 (ms) per subset, from ``start``."""

    service: str
    start: float  # the step's start: the x axis counts seconds from here
    detected_at: float  # the check that rolled back
    error_rates: Mapping[str, Series]  # subset role ("canary", "stable") → % of 5xx
    p99_ms: Mapping[str, Series] = field(default_factory=dict)
    verdict: str = ""  # one line under the title: what was conclusive
    slo_error_rate: float | None = None  # 100 - success rate SLO, drawn as a dashed line
    slo_p99_ms: float | None = None


def _plot(axis: object, chart: RollbackChart, data: Mapping[str, Series],
          slo: float | None, label: str) -> None:
    from matplotlib.axes import Axes

    assert isinstance(axis, Axes)
    for role, width in (("canary", 2.6), ("stable", 1.4)):  # stable on top: both show
        points = [(t - chart.start, v) for t, v in data.get(role, ()) if math.isfinite(v)]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, color=COLOURS[role], linewidth=width, label=role,
                      marker="o" if len(points) < 30 else None, markersize=3)
    if slo is not None:
        axis.axhline(slo, color="#555555", linestyle="--", linewidth=1, label="SLO")
    axis.axvline(0, color="#999999", linewidth=1, linestyle=":")
    axis.axvline(chart.detected_at - chart.start, color="black", linewidth=1.5)
    axis.set_ylabel(label)
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)


def rollback_png(chart: RollbackChart) -> bytes:
    """The chart as PNG bytes: error rate on top, p99 below (when there is any), the moment
    of detection marked with a vertical line on both."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = 2 if any(chart.p99_ms.values()) else 1
    figure = Figure(figsize=(8, 2.6 * rows + 0.8), dpi=100)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    _plot(axes[0], chart, chart.error_rates, chart.slo_error_rate, "5xx (% of requests)")
    if rows == 2:
        _plot(axes[1], chart, chart.p99_ms, chart.slo_p99_ms, "p99 latency (ms)")
    detected = chart.detected_at - chart.start
    top = axes[0]
    top.annotate(f"rollback decided at {detected:.1f} s", xy=(detected, 0.55),
                 xycoords=("data", "axes fraction"), xytext=(-6, 0),
                 textcoords="offset points", ha="right", fontsize=8,
                 bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "none"})
    top.annotate("step began", xy=(0, 0.8), xycoords=("data", "axes fraction"),
                 xytext=(4, 0), textcoords="offset points", ha="left", fontsize=8,
                 color="#666666")
    axes[-1].set_xlabel("seconds since the step began")
    title = f"{chart.service}: canary vs stable"
    figure.suptitle(title if not chart.verdict else f"{title}\n{chart.verdict}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
