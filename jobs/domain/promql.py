"""PromQL for canary analysis, and the pure judgement of what it returns.

Every signal is ONE query covering every rollout under watch (a regex on the service names), so
the number of queries per analysis tick is constant however many rollouts there are. Results are
grouped by service, namespace and version: the caller picks the canary's version out of them.

Rules:
- only ``reporter="destination"``: Istio reports every request from both ends, so without it
  each request counts twice and p99 mixes client and server latency;
- the rate window holds at least four scrapes (``rate_window``);
- an empty error numerator is zero errors (``or 0 * total`` keeps the group), while an empty or
  zero denominator is "no traffic" — and no traffic is never healthy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

SeriesKey = tuple[str, str, str]
"""(destination_service_name, destination_workload_namespace, destination_version)."""

GROUP_LABELS = ("destination_service_name", "destination_workload_namespace", "destination_version")
_BY = ", ".join(GROUP_LABELS)
WINDOW_LABEL = "window"
MIN_SCRAPES_PER_WINDOW = 4
_REGEX_SPECIALS = frozenset("\\.+*?()|[]{}^$")


def rate_window(
    requested: float, scrape_interval: float, scrapes: int = MIN_SCRAPES_PER_WINDOW
) -> float:
    """The window (seconds) to use: at least ``scrapes`` samples plus one interval of margin.

    The margin is there because scrapes jitter: a window of exactly 4 intervals sometimes holds
    only 3 samples, and rate() over too few samples swings wildly.
    """
    return max(requested, (scrapes + 1) * scrape_interval)


def duration(seconds: float) -> str:
    """A PromQL duration literal; whole seconds (PromQL has no fractional durations)."""
    whole = max(1, math.ceil(seconds))
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def _escape_regex(name: str) -> str:
    # RE2 metacharacters first, then the PromQL string literal's own escapes (\ and ").
    escaped = "".join("\\" + ch if ch in _REGEX_SPECIALS else ch for ch in name)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def _alternation(names: Iterable[str]) -> str:
    return "|".join(_escape_regex(n) for n in sorted(set(names)))


def selector(watched: Sequence[tuple[str, str]], extra: str = "",
             versions: Sequence[str] = ()) -> str:
    """Label matchers for the watched (service, namespace) pairs, destination reporter only.

    The namespace regex is a coarse filter (it admits cross pairs); ``parse_vector`` callers
    keep only the exact pairs they asked for.
    """
    if not watched:
        raise ValueError("no services to watch: build no query at all")
    services = _alternation(s for s, _ in watched)
    namespaces = _alternation(n for _, n in watched)
    matchers = [
        'reporter="destination"',
        f'destination_service_name=~"{services}"',
        f'destination_workload_namespace=~"{namespaces}"',
    ]
    if versions:
        # The versions under comparison (each rollout's canary and stable): other versions'
        # series (an old release still scraped) are no work for Prometheus.
        matchers.append(f'destination_version=~"{_alternation(versions)}"')
    if extra:
        matchers.append(extra)
    return "{" + ", ".join(matchers) + "}"


def _sum_rate(metric: str, sel: str, window: float, by: str = _BY) -> str:
    return f"sum by ({by}) (rate({metric}{sel}[{duration(window)}]))"


def request_rate_query(watched: Sequence[tuple[str, str]], window: float,
                       versions: Sequence[str] = ()) -> str:
    """Requests per second reaching each version."""
    return _sum_rate("istio_requests_total", selector(watched, versions=versions), window)


def _error_ratio(watched: Sequence[tuple[str, str]], window: float,
                 versions: Sequence[str] = ()) -> str:
    total = _sum_rate("istio_requests_total", selector(watched, versions=versions), window)
    errors = _sum_rate("istio_requests_total",
                       selector(watched, 'response_code=~"5.*"', versions), window)
    # Istio creates the 5xx series only when the first 5xx happens: an empty numerator means zero
    # errors. `or on() vector(0)` would give one label-less 0 that matches no group, so fill each
    # group that has traffic with 0 * its own total instead. No traffic → no series (or 0/0 = NaN).
    return f"({errors} or 0 * {total}) / {total}"


def success_rate_query(watched: Sequence[tuple[str, str]], window: float,
                       versions: Sequence[str] = ()) -> str:
    """Percentage of requests that were not 5xx."""
    return f"100 * (1 - {_error_ratio(watched, window, versions)})"


def latency_query(watched: Sequence[tuple[str, str]], window: float, quantile: float,
                  versions: Sequence[str] = ()) -> str:
    """Latency quantile in milliseconds from Istio's histogram (NaN where there is no traffic)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    buckets = _sum_rate(
        "istio_request_duration_milliseconds_bucket", selector(watched, versions=versions),
        window, by=_BY + ", le"
    )
    return f"histogram_quantile({quantile:g}, {buckets})"


def error_ratio_query(watched: Sequence[tuple[str, str]], windows: Sequence[float],
                      versions: Sequence[str] = ()) -> str:
    """Error ratio (0..1) over each window, told apart by a ``window`` label, in one query.

    It is the burn rate's numerator: each service may have its own availability SLO, so the
    division by the error budget happens in ``burn_rate`` — the query stays one for everybody.
    """
    if not windows:
        raise ValueError("at least one burn-rate window is needed")
    parts = [
        f'label_replace({_error_ratio(watched, w, versions)}, "{WINDOW_LABEL}", '
        f'"{duration(w)}", "", "")'
        for w in windows
    ]
    return " or ".join(parts)


# Istio's default buckets for istio_request_duration_milliseconds (ms).
ISTIO_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
COUNT_LABEL = "count"  # what a sample of ``counts_query`` counts: requests, errors, bucket


def bucket_bound(ms: float) -> float:
    """The first Istio bucket bound at or above ``ms`` (the last one above them all)."""
    return float(next((b for b in ISTIO_BUCKETS_MS if b >= ms), ISTIO_BUCKETS_MS[-1]))


def _le_alternation(bounds_ms: Iterable[float]) -> str:
    # Prometheus 3 writes a bucket bound as a float ("100.0"), older ones as exposed ("100").
    forms = {f"{b:g}" for b in bounds_ms} | {f"{float(b)!r}" for b in bounds_ms}
    return "|".join(_escape_regex(f) for f in sorted(forms)) + "|\\\\+Inf"


def counts_query(watched: Sequence[tuple[str, str]], bounds_ms: Sequence[float],
                 versions: Sequence[str] = ()) -> str:
    """Raw cumulative counters at the evaluation instant, in one query: requests, 5xx and the
    latency buckets at ``bounds_ms`` (Istio bucket bounds) and +Inf, per version, told apart by
    a ``count`` label. No ``rate()``: the sequential comparison counts since its baseline.

    A version without a 5xx yet has no errors sample: zero errors."""
    by = _BY
    sel = selector(watched, versions=versions)
    errors = selector(watched, 'response_code=~"5.*"', versions)
    parts = [
        f"sum by ({by}) (istio_requests_total{sel})",
        f"sum by ({by}) (istio_requests_total{errors})",
    ]
    if bounds_ms:
        le = f'le=~"{_le_alternation(bounds_ms)}"'
        parts.append(f"sum by ({by}, le) (istio_request_duration_milliseconds_bucket"
                     f"{selector(watched, le, versions)})")
    kinds = ("requests", "errors", "bucket")
    return " or ".join(f'label_replace({part}, "{COUNT_LABEL}", "{kind}", "", "")'
                       for part, kind in zip(parts, kinds, strict=False))


def parse_counts(result: Sequence[Mapping[str, Any]]) -> dict[SeriesKey, RawCounts]:
    """``counts_query``'s answer → {(service, namespace, version): RawCounts}."""
    found: dict[SeriesKey, tuple[dict[str, float], dict[float, float]]] = {}
    for sample in result:
        metric = sample.get("metric", {})
        key = _series_key(metric)
        kind = metric.get(COUNT_LABEL)
        if key is None or kind is None:
            continue
        value = float(sample["value"][1])
        totals, buckets = found.setdefault(key, ({}, {}))
        if kind == "bucket":
            try:
                buckets[float(metric.get("le", "nan"))] = value
            except ValueError:
                continue
        else:
            totals[str(kind)] = value
    return {key: RawCounts(requests=totals.get("requests", 0.0),
                           errors=totals.get("errors", 0.0),
                           buckets=tuple(sorted((le, v) for le, v in buckets.items()
                                                if le != math.inf)),
                           bucketed=buckets.get(math.inf, 0.0))
            for key, (totals, buckets) in found.items()}


SIGNAL_LABEL = "signal"


def chart_query(watched: Sequence[tuple[str, str]], window: float,
                versions: Sequence[str] = ()) -> str:
    """For a range query: each version's 5xx (% of requests) and p99 (ms), told apart by a
    ``signal`` label (``errors``, ``p99``) — one query draws both subsets' lines."""
    errors = f"100 * {_error_ratio(watched, window, versions)}"
    p99 = latency_query(watched, window, 0.99, versions)
    return (f'label_replace({errors}, "{SIGNAL_LABEL}", "errors", "", "") or '
            f'label_replace({p99}, "{SIGNAL_LABEL}", "p99", "", "")')


def parse_matrix(result: Sequence[Mapping[str, Any]]
                 ) -> dict[tuple[str, SeriesKey], list[tuple[float, float]]]:
    """``chart_query``'s range answer → {(signal, key): [(time, value), ...]}."""
    parsed: dict[tuple[str, SeriesKey], list[tuple[float, float]]] = {}
    for series in result:
        metric = series.get("metric", {})
        key = _series_key(metric)
        signal = metric.get(SIGNAL_LABEL)
        if key is None or not signal:
            continue
        parsed[(str(signal), key)] = [(float(t), float(v)) for t, v in series.get("values", [])]
    return parsed


def burn_rate(error_ratio: float, availability: float) -> float:
    """How many times faster than the SLO allows the error budget is being spent."""
    budget = 1 - availability / 100
    if budget <= 0:
        raise ValueError(f"availability {availability}% leaves no error budget")
    return error_ratio / budget


def _series_key(metric: Mapping[str, str]) -> SeriesKey | None:
    values = tuple(metric.get(label) for label in GROUP_LABELS)
    if any(not v for v in values):
        return None
    return (str(values[0]), str(values[1]), str(values[2]))


def parse_vector(result: Sequence[Mapping[str, Any]]) -> dict[SeriesKey, float]:
    """An instant vector from the HTTP API → {(service, namespace, version): value}.

    NaN is kept (it means "no traffic in the window"); series missing a grouping label are
    dropped, since they cannot be told apart.
    """
    parsed: dict[SeriesKey, float] = {}
    for sample in result:
        key = _series_key(sample.get("metric", {}))
        if key is not None:
            parsed[key] = float(sample["value"][1])
    return parsed


def parse_windowed(result: Sequence[Mapping[str, Any]]) -> dict[SeriesKey, dict[str, float]]:
    """Like ``parse_vector`` for ``error_ratio_query``: {key: {window: value}}."""
    parsed: dict[SeriesKey, dict[str, float]] = {}
    for sample in result:
        metric = sample.get("metric", {})
        key = _series_key(metric)
        window = metric.get(WINDOW_LABEL)
        if key is not None and window:
            parsed.setdefault(key, {})[str(window)] = float(sample["value"][1])
    return parsed


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class SLOThresholds:
    success_rate: float  # % non-5xx, at least
    latency_p99_ms: float  # at most
    latency_p95_ms: float | None = None
    min_request_rate: float = 1.0  # req/s reaching the canary; below it nothing is judged
    availability: float = 99.9  # % — the burn rate's error budget is 100 - availability
    burn_rate_factor: float = 14.4  # fail when every burn window burns faster than this
    # The service's own burn windows (seconds); the batched query may hold more (other
    # services'), which this service's judgement ignores. Empty: every window measured.
    burn_windows: tuple[float, ...] = ()


@dataclass(frozen=True)
class CanaryMetrics:
    """What Prometheus said about one version; None where it had nothing to say."""

    request_rate: float | None  # req/s
    success_rate: float | None  # % non-5xx; None: no traffic
    latency_p99_ms: float | None
    latency_p95_ms: float | None = None
    error_ratios: tuple[tuple[str, float], ...] = ()  # (window, 0..1), shortest window first


@dataclass(frozen=True)
class RawCounts:
    """One version's cumulative counters at an instant (``counts_query``)."""

    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...] = ()  # (le ms, cumulative count), finite bounds
    bucketed: float = 0.0  # the +Inf bucket: every request the histogram saw


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    text: str  # measured vs threshold, for people: "success rate 91.2% < 99.9%"


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    checks: tuple[Check, ...]

    @property
    def lines(self) -> list[str]:
        return [c.text for c in self.checks]

    @property
    def summary(self) -> str:
        return "; ".join(self.lines)


def _number(value: float, threshold: float, min_decimals: int) -> str:
    """``value`` with just enough decimals that it does not look equal to ``threshold``.

    Otherwise 99.86 against 99.9 would read "99.9% < 99.9%".
    """
    for decimals in range(min_decimals, 5):
        if round(value, decimals) != round(threshold, decimals):
            return f"{value:.{decimals}f}"
    return f"{value:.{min_decimals}f}"


def _at_least(name: str, value: float, floor: float, unit: str, decimals: int) -> Check:
    shown = f"{_number(value, floor, decimals)}{unit}"
    if value >= floor:
        return Check(name, Verdict.PASS, f"{name} {shown} ≥ {floor:g}{unit}")
    return Check(name, Verdict.FAIL, f"{name} {shown} < {floor:g}{unit}")


def _at_most(name: str, value: float | None, ceiling: float) -> Check:
    if value is None or math.isnan(value):
        return Check(name, Verdict.NO_DATA, f"{name} no data (no latency samples)")
    shown = f"{_number(value, ceiling, 0)} ms"
    if value <= ceiling:
        return Check(name, Verdict.PASS, f"{name} {shown} ≤ {ceiling:g} ms")
    return Check(name, Verdict.FAIL, f"{name} {shown} > {ceiling:g} ms")


def _burn_check(error_ratios: Sequence[tuple[str, float]], slo: SLOThresholds) -> Check:
    name = "burn rate"
    empty = [window for window, ratio in error_ratios if math.isnan(ratio)]
    if empty:
        return Check(name, Verdict.NO_DATA, f"{name} no data over {', '.join(empty)}")
    burns = [(window, burn_rate(ratio, slo.availability)) for window, ratio in error_ratios]
    shown = ", ".join(f"{b:.1f}x over {w}" for w, b in burns)
    # Multi-window: the long window confirms the short one is not a blip, so all must exceed.
    if all(b > slo.burn_rate_factor for _, b in burns):
        return Check(name, Verdict.FAIL, f"{name} {shown} > {slo.burn_rate_factor:g}x")
    return Check(name, Verdict.PASS, f"{name} {shown}, not all above {slo.burn_rate_factor:g}x")


def evaluate(
    sample: CanaryMetrics | None, slo: SLOThresholds, min_request_rate: float | None = None
) -> CheckResult:
    """Judge one version's metrics against its SLO. No data is never PASS.

    Too little traffic stops the judgement at the first line: success rate and latency over a
    handful of requests say nothing either way, and the policy decides what NO_DATA means.
    """
    minimum = slo.min_request_rate if min_request_rate is None else min_request_rate
    rate = None if sample is None else sample.request_rate
    if sample is None or rate is None or math.isnan(rate):
        text = "request rate no data (no series in Prometheus for this version)"
        return CheckResult(Verdict.NO_DATA, (Check("request rate", Verdict.NO_DATA, text),))
    if rate < minimum or rate == 0:
        text = f"request rate {_number(rate, minimum, 1)} req/s < {minimum:g} req/s minimum"
        return CheckResult(Verdict.NO_DATA, (Check("request rate", Verdict.NO_DATA, text),))

    traffic = f"request rate {rate:.1f} req/s ≥ {minimum:g} req/s"
    checks = [Check("request rate", Verdict.PASS, traffic)]
    if sample.success_rate is None or math.isnan(sample.success_rate):
        checks.append(Check("success rate", Verdict.NO_DATA, "success rate no data"))
    else:
        checks.append(_at_least("success rate", sample.success_rate, slo.success_rate, "%", 1))
    checks.append(_at_most("p99", sample.latency_p99_ms, slo.latency_p99_ms))
    if slo.latency_p95_ms is not None:
        checks.append(_at_most("p95", sample.latency_p95_ms, slo.latency_p95_ms))
    own = {duration(w) for w in slo.burn_windows}
    ratios = [(w, r) for w, r in sample.error_ratios if not own or w in own]
    if ratios:
        checks.append(_burn_check(ratios, slo))

    verdicts = {c.verdict for c in checks}
    if Verdict.FAIL in verdicts:
        verdict = Verdict.FAIL
    elif Verdict.NO_DATA in verdicts:
        verdict = Verdict.NO_DATA
    else:
        verdict = Verdict.PASS
    return CheckResult(verdict, tuple(checks))
