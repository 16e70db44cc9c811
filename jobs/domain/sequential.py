"""Anytime-valid sequential comparison of a canary with its stable version (pure, stdlib only).

What is tested. Each request of a subset (canary ``c`` or stable ``s``) is an *event* (an error,
or slower than a latency bound) with an unknown probability ``q_c`` or ``q_s``. The null is

    H0:  q_c <= q_s + max(tolerance * q_s, floor)

the union of H0_rel ``q_c <= (1 + tolerance) q_s`` (not more than 10 % worse, relatively) and
H0_abs ``q_c <= q_s + floor`` (not more than 0.1 percentage points worse): a regression has to be
worse than the stable by more than both. Rejecting a union needs both parts rejected (an
intersection-union test), so the reported e-value is the smaller of two:

- relative: given the events of both subsets, the canary's share of them is Binomial with
  ``p = q_c n_c / (q_c n_c + q_s n_s)`` (events are rare, so each subset's count is Poisson in
  its requests), which H0_rel bounds by ``p0 = (1+tol) n_c / ((1+tol) n_c + n_s)``: no nuisance
  parameter is left. e = Beta(1/2, 1/2) mixture likelihood of the share / its maximum over
  ``p <= p0``: the Bayes factor against p0 when the canary's share is above it, below 1 when
  not — closed form with log-Beta functions. This part takes ``p0`` from the observed
  cumulative split: exact when the split is steady (one rollout step at one weight), close to
  exact when routing is random (in the tests' simulations it stays below alpha).
- absolute: e = product over the two subsets of Beta(0.3, 5) mixture likelihoods of their
  Bernoulli requests / the maximum likelihood over H0_abs (a one-dimensional concave
  maximisation on the boundary ``q_c = q_s + floor``). Exact, conditional on which requests went
  where, whatever the routing.

Why anytime-valid. For any fixed point of the null (a pair ``(q_c, q_s)``, or a share ``p``), a
mixture likelihood divided by the likelihood at that point is a non-negative martingale with mean
1 as requests (or events) arrive: a Bayes predictive's next factor has conditional expectation 1
once divided by the truth's. Dividing by the *maximum* over the null only makes it smaller.
Ville's inequality bounds the chance that such a process ever reaches 1/alpha by alpha, so the
e-value may be looked at after every scrape, for as long as one likes, and P(any false detection
during the step) <= alpha. The inputs are counts cumulative since the step began (sufficient
statistics); they may be fractional (Prometheus extrapolates); a count that went backwards, a
negative or a NaN is no evidence (e = 1). Each test spends its own alpha: split alpha among the
tests combined, and across steps (or multiply the e-value a step ended with into the next's).

Latency: the same test on histograms, the events being the requests above a bound (snapped up
to a bucket bound), for a few bounds chosen before the step; the e-value is their mean (a fixed-
weight mean of e-values is one). Not a Dirichlet-multinomial: tails are where regressions show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Buckets = Sequence[tuple[float, float]]  # Prometheus: (le in ms, cumulative count), +Inf too

SHARE_PRIOR = (0.5, 0.5)  # Beta prior of the canary's share of the events (relative part)
RATE_PRIOR = (0.3, 5.0)  # Beta prior of each subset's event rate (absolute part)


@dataclass(frozen=True)
class Counts:
    """One subset since the step began: its requests and the events among them."""

    requests: float
    events: float

    @property
    def rate(self) -> float:
        return self.events / self.requests if self.requests > 0 else math.nan


@dataclass(frozen=True)
class _Judged:
    log_e: float  # log of the e-value
    threshold: float  # 1 / alpha: a regression is declared when the e-value reaches it

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))

    @property
    def conclusive(self) -> bool:
        return self.log_e >= math.log(self.threshold)


@dataclass(frozen=True)
class Evidence(_Judged):
    """One look: ``log_e`` is the min of the two parts (or the part whose null is the union)."""

    canary: Counts  # the counts it rests on
    stable: Counts
    log_e_relative: float = 0.0
    log_e_absolute: float = 0.0
    reason: str = ""  # why the counts are no evidence; "" when they were used
    bound_ms: float | None = None  # latency: events are requests slower than this bucket bound

    @property
    def canary_rate(self) -> float:
        return self.canary.rate

    @property
    def stable_rate(self) -> float:
        return self.stable.rate


@dataclass(frozen=True)
class LatencyEvidence(_Judged):
    """``log_e``: log of the mean of the bounds' e-values (an unusable bound counts as 1)."""

    bounds: tuple[Evidence, ...]


@dataclass(frozen=True)
class ServiceWide:
    """Point estimates over one window (NaN without requests), and whether the stable breaks
    the SLO as badly as the canary does (then the canary is not to blame)."""

    canary_success_rate: float  # % of requests that were not errors
    stable_success_rate: float
    canary_slow_share: float  # share of requests above the latency bound's bucket
    stable_slow_share: float
    errors: bool
    latency: bool

    @property
    def service_wide(self) -> bool:
        return self.errors or self.latency


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else -math.inf if y <= 0 else x * math.log(y)


def _loglik(events: float, others: float, q: float) -> float:
    return _xlogy(events, q) + _xlogy(others, 1.0 - q)


def _slope_and_bend(events: float, others: float, q: float) -> tuple[float, float]:
    """The first and second derivatives of ``_loglik`` in q (0 < q < 1)."""
    up, down = (events / q if events else 0.0), (others / (1.0 - q) if others else 0.0)
    return up - down, -up / q - down / (1.0 - q)


def _check(alpha: float, tolerance: float, floor: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not tolerance >= 0 or not 0 <= floor < 1:
        raise ValueError(f"need tolerance >= 0 and 0 <= floor < 1, got {tolerance}, {floor}")


def log_e_relative(canary: Counts, stable: Counts, tolerance: float = 0.1) -> float:
    """log e-value of the canary's share of the events against H0_rel (clean counts only)."""
    total = canary.events + stable.events
    if total <= 0 or canary.requests <= 0 or stable.requests <= 0:
        return 0.0
    weight = (1.0 + tolerance) * canary.requests
    p0 = weight / (weight + stable.requests)
    a, b = SHARE_PRIOR
    mixture = _lbeta(a + canary.events, b + stable.events) - _lbeta(a, b)
    return mixture - _loglik(canary.events, stable.events, min(canary.events / total, p0))


def _null_max(canary: Counts, stable: Counts, floor: float) -> float:
    """The log-likelihood's maximum over H0_abs (q_c <= q_s + floor)."""
    xc, yc = canary.events, canary.requests - canary.events
    xs, ys = stable.events, stable.requests - stable.events
    rc = canary.rate if canary.requests > 0 else 0.0
    rs = stable.rate if stable.requests > 0 else 0.0
    if canary.requests <= 0 or stable.requests <= 0 or rc <= rs + floor:
        return _loglik(xc, yc, rc) + _loglik(xs, ys, rs)

    def value(q: float) -> float:  # concave in q, the stable's rate on the boundary
        return _loglik(xc, yc, q + floor) + _loglik(xs, ys, q)

    lo, hi = rs, rc - floor  # value rises at lo and falls at hi: the maximum is between them
    q = (lo + hi) / 2
    for _ in range(100):  # Newton's method, kept inside a shrinking bracket
        (slope_c, bend_c), (slope_s, bend_s) = (_slope_and_bend(xc, yc, q + floor),
                                                _slope_and_bend(xs, ys, q))
        slope, bend = slope_c + slope_s, bend_c + bend_s
        lo, hi = (q, hi) if slope > 0 else (lo, q)
        step = q - slope / bend if bend < 0 else (lo + hi) / 2
        if abs(step - q) <= 1e-12 * q:
            break
        q = step if lo < step < hi else (lo + hi) / 2
    return max(value(q), value(lo), value(hi))  # the larger: the conservative side


def log_e_absolute(canary: Counts, stable: Counts, floor: float = 0.001) -> float:
    """log e-value of both subsets' events against H0_abs (clean counts only)."""
    a, b = RATE_PRIOR
    mixture = sum(_lbeta(a + c.events, b + c.requests - c.events) - _lbeta(a, b)
                  for c in (canary, stable))
    return mixture - _null_max(canary, stable, floor)


def _problem(counts: Counts, before: Counts | None) -> str:
    numbers = (counts.requests, counts.events)
    if not all(math.isfinite(n) for n in numbers):
        return "a count is not a number"
    if min(numbers) < 0:
        return "a count is negative (a counter reset)"
    if before is not None and (counts.requests < before.requests or counts.events < before.events):
        return "a count went backwards (a counter reset)"
    return ""


def compare(canary: Counts, stable: Counts, *, alpha: float = 0.01, tolerance: float = 0.1,
            floor: float = 0.001, previous: tuple[Counts, Counts] | None = None,
            bound_ms: float | None = None) -> Evidence:
    """The two-sample test of the module docstring on cumulative counts since the step began.

    ``previous``: the counts of the look before, if kept: a count below them is no evidence."""
    _check(alpha, tolerance, floor)
    before_c, before_s = (None, None) if previous is None else previous
    reason = _problem(canary, before_c) or _problem(stable, before_s)
    if not reason and canary.requests <= 0:
        reason = "no canary requests"
    if not reason and stable.requests <= 0:
        reason = "no stable requests"
    if reason:
        return Evidence(0.0, 1 / alpha, canary, stable, reason=reason, bound_ms=bound_ms)
    # Extrapolated counts can show a few more events than requests: never more than all of them.
    canary = Counts(canary.requests, min(canary.events, canary.requests))
    stable = Counts(stable.requests, min(stable.events, stable.requests))
    rel = log_e_relative(canary, stable, tolerance)
    absolute = log_e_absolute(canary, stable, floor)
    # One part's null holding the other's makes the union its null: that part alone decides.
    log_e = rel if floor == 0 else absolute if tolerance == 0 else min(rel, absolute)
    return Evidence(log_e, 1 / alpha, canary, stable, rel, absolute, bound_ms=bound_ms)


def error_rate_test(canary_requests: float, canary_errors: float, stable_requests: float,
                    stable_errors: float, *, alpha: float = 0.01, tolerance: float = 0.1,
                    floor: float = 0.001,
                    previous: tuple[Counts, Counts] | None = None) -> Evidence:
    """Is the canary's error rate worse than the stable's beyond the tolerances?"""
    return compare(Counts(canary_requests, canary_errors), Counts(stable_requests, stable_errors),
                   alpha=alpha, tolerance=tolerance, floor=floor, previous=previous)


def slow_requests(buckets: Buckets, bound_ms: float) -> tuple[float, Counts] | None:
    """(the first bucket bound >= bound_ms, Counts(all requests, requests above it)).

    None without a +Inf bucket, a usable bound or finite counts. Cumulative counts that dip
    (extrapolation) are read as their running maximum, as histogram_quantile does."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != math.inf or any(math.isnan(c) for _, c in ordered):
        return None
    total = ordered[-1][1]
    below, seen = None, -math.inf
    for le, count in ordered[:-1]:
        seen = max(seen, count)
        if le >= bound_ms:
            below = (le, min(seen, total))
            break
    if below is None or not math.isfinite(total):
        return None
    return below[0], Counts(total, total - below[1])


def latency_test(canary: Buckets, stable: Buckets, bounds_ms: Sequence[float], *,
                 alpha: float = 0.01, tolerance: float = 0.1, floor: float = 0.001,
                 previous: tuple[Buckets, Buckets] | None = None) -> LatencyEvidence:
    """Is the canary's share of requests above each bound worse than the stable's?

    ``bounds_ms`` must be chosen before the step (e.g. the SLO's p99 bound and half of it), not
    from this step's data; each is snapped up to a bucket bound both histograms have."""
    _check(alpha, tolerance, floor)
    if not bounds_ms:
        raise ValueError("at least one latency bound is needed")
    results = []
    for bound in bounds_ms:
        c, s = slow_requests(canary, bound), slow_requests(stable, bound)
        if c is None or s is None or c[0] != s[0]:
            none = Counts(0.0, 0.0)
            results.append(Evidence(0.0, 1 / alpha, none, none, reason="no bucket for the bound",
                                    bound_ms=bound))
            continue
        before = None
        if previous is not None:
            pc, ps = slow_requests(previous[0], bound), slow_requests(previous[1], bound)
            before = None if pc is None or ps is None else (pc[1], ps[1])
        results.append(compare(c[1], s[1], alpha=alpha, tolerance=tolerance, floor=floor,
                               previous=before, bound_ms=c[0]))
    top = max(r.log_e for r in results)
    log_e = top + math.log(sum(math.exp(r.log_e - top) for r in results) / len(results))
    return LatencyEvidence(log_e, 1 / alpha, tuple(results))


def _as_bad(canary: float, stable: float, tolerance: float, floor: float) -> bool:
    return canary <= stable + max(tolerance * stable, floor)


def service_wide(canary: Counts, stable: Counts, canary_buckets: Buckets | None = None,
                 stable_buckets: Buckets | None = None, *, success_rate: float,
                 latency_bound_ms: float | None = None, quantile: float = 0.99,
                 tolerance: float = 0.1, floor: float = 0.001) -> ServiceWide:
    """Does the stable itself break the SLO, at least as badly as the canary (within the
    tolerances), in the same window? ``canary``/``stable`` count requests and errors;
    ``success_rate`` is the SLO's % of non-errors; the latency SLO is "the ``quantile`` at most
    ``latency_bound_ms``", i.e. at most 1 - quantile of the requests above it."""
    errors = _as_bad(canary.rate, stable.rate, tolerance, floor) \
        and stable.rate > 1 - success_rate / 100
    shares = [math.nan, math.nan]
    if latency_bound_ms is not None and canary_buckets is not None and stable_buckets is not None:
        c = slow_requests(canary_buckets, latency_bound_ms)
        s = slow_requests(stable_buckets, latency_bound_ms)
        if c is not None and s is not None and c[0] == s[0]:
            shares = [c[1].rate, s[1].rate]
    latency = _as_bad(shares[0], shares[1], tolerance, floor) and shares[1] > 1 - quantile
    return ServiceWide(100 * (1 - canary.rate), 100 * (1 - stable.rate), shares[0], shares[1],
                       errors, latency)
