"""The canary judged against its stable version: what one analysis check decides (pure).

Three kinds of evidence meet here, in this order:

1. **The sequential comparison** (``jobs.domain.sequential``) on counts since the step began:
   the canary's and the stable's requests, 5xx and requests slower than a few latency bounds,
   from raw cumulative counters minus a baseline taken when the step began (kept in the
   rollout's state). A conclusive e-value (at least 1/alpha) rolls back at once, whatever
   ``failure_threshold`` says: it is anytime-valid, so looking at every check spends nothing.
   Alpha is split evenly between the error test and the latency test and across the rollout's
   steps (each step is a test of its own at ``alpha / (2 x steps)``), so the chance that a
   healthy canary is ever rolled back by it, over the whole rollout, is at most ``alpha``.
   A counter that went backwards (a pod restarted) takes a new baseline; the e-value reached
   before is carried into the new one (a product of e-values over consecutive segments is one).
2. **The SLO guards** (``promql.evaluate``): success rate, p99, p95, burn rate of the canary,
   judged as before, a failure counting towards ``failure_threshold``.
3. **Service-wide**: a guard the canary fails is excused when the stable fails the same SLO in
   the same window and the canary is not worse than it beyond the tolerances: the rollout holds
   (never advances) and the canary is not blamed. For p99 and p95 the stable's quantile is not
   measured: the counts since the step began say it (the share of the stable's requests above
   the bound's bucket beyond 1 - quantile, the canary's share within the tolerances of it).

No data is never healthy: the guards' NO_DATA stays NO_DATA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from jobs.domain.promql import (
    CanaryMetrics,
    CheckResult,
    RawCounts,
    SLOThresholds,
    Verdict,
    bucket_bound,
    duration,
)
from jobs.domain.sequential import (
    Counts,
    Evidence,
    LatencyEvidence,
    compare,
    latency_test,
    log_e_relative,
    service_wide,
)


class Tally(BaseModel):
    """Counters of one subset (persisted with the rollout): requests, 5xx, latency buckets."""

    model_config = ConfigDict(frozen=True)

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (le ms, cumulative), finite bounds only
    bucketed: float = 0.0  # the +Inf bucket

    @classmethod
    def of(cls, raw: RawCounts | None) -> Tally:
        """A version's counters; a version with no series yet counts 0."""
        if raw is None:
            return cls()
        # Built from numbers already parsed: no validation (a thousand of these per tick).
        return cls.model_construct(requests=raw.requests, errors=raw.errors,
                                   buckets=raw.buckets, bucketed=raw.bucketed)

    def minus(self, base: Tally) -> Tally:
        """Since ``base`` (a bucket absent from ``base`` counted 0 there)."""
        before = dict(base.buckets)
        return Tally.model_construct(
            requests=self.requests - base.requests, errors=self.errors - base.errors,
            buckets=tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            bucketed=self.bucketed - base.bucketed)

    def below(self, other: Tally) -> bool:
        """Whether any counter is smaller than in ``other``: a counter reset in between."""
        if self.requests < other.requests or self.errors < other.errors \
                or self.bucketed < other.bucketed:
            return True
        before = dict(other.buckets)
        return any(c < before.get(le, 0.0) for le, c in self.buckets)

    def histogram(self) -> list[tuple[float, float]]:
        return [*self.buckets, (math.inf, self.bucketed)]


class Baseline(BaseModel):
    """Where the current step's comparison counts from, and what it saw at the last check."""

    model_config = ConfigDict(frozen=True)

    step_index: int
    at: float  # when the baseline was taken (the step's start, or the last counter reset)
    canary: Tally
    stable: Tally
    seen_canary: Tally  # the counters at the last check: one below them is a reset
    seen_stable: Tally
    carried_errors: float = 0.0  # log e-values reached before a counter reset in this step
    carried_latency: float = 0.0
    last_errors: float = 0.0  # log e-values at the last check, including what was carried
    last_latency: float = 0.0
    resets: int = 0


def baseline(step_index: int, now: float, canary: RawCounts | None,
             stable: RawCounts | None) -> Baseline:
    c, s = Tally.of(canary), Tally.of(stable)
    return Baseline.model_construct(step_index=step_index, at=now, canary=c, stable=s,
                                    seen_canary=c, seen_stable=s, carried_errors=0.0,
                                    carried_latency=0.0, last_errors=0.0, last_latency=0.0,
                                    resets=0)


@dataclass(frozen=True)
class Tolerances:
    """The policy's knobs for one service's comparison."""

    alpha: float = 0.01
    tolerance: float = 0.1
    floor: float = 0.001
    steps: int = 1  # the rollout's steps: alpha is split across them
    bounds_ms: tuple[float, ...] = (50.0, 100.0)  # Istio bucket bounds, chosen before the step

    @property
    def alpha_per_test(self) -> float:
        """Each step runs two tests (errors, latency), each at alpha / (2 x steps)."""
        return self.alpha / (2 * max(1, self.steps))


def latency_bounds(latency_p99_ms: float) -> tuple[float, ...]:
    """The bounds the latency test counts slow requests above: the p99 SLO and half of it,
    snapped up to Istio's buckets (fixed by the policy, never by the step's data)."""
    return tuple(sorted({bucket_bound(latency_p99_ms / 2), bucket_bound(latency_p99_ms)}))


def counted_bounds(latency_p99_ms: float, latency_p95_ms: float | None) -> tuple[float, ...]:
    """The buckets counted since the step began: the latency test's, and the p95 SLO's (for
    the service-wide excuse of a p95 the canary fails; the test itself never uses it)."""
    extra = set() if latency_p95_ms is None else {bucket_bound(latency_p95_ms)}
    return tuple(sorted(set(latency_bounds(latency_p99_ms)) | extra))


@dataclass(frozen=True)
class Look:
    """One check's comparison: the evidence, and the baseline to keep for the next."""

    baseline: Baseline
    threshold: float  # 1 / alpha_per_test
    errors: Evidence | None = None
    latency: LatencyEvidence | None = None
    log_e_errors: float = 0.0  # including what was carried over a counter reset
    log_e_latency: float = 0.0
    note: str = ""  # why there is no evidence at this check ("" when there is)
    since: tuple[Tally, Tally] | None = None  # canary's and stable's counts since the baseline

    @property
    def conclusive(self) -> tuple[str, ...]:
        """The tests whose e-value reached 1/alpha: ``errors``, ``latency``."""
        limit = math.log(self.threshold)
        return tuple(name for name, log_e in (("errors", self.log_e_errors),
                                              ("latency", self.log_e_latency))
                     if log_e >= limit and (self.errors if name == "errors" else self.latency))


def look(previous: Baseline | None, step_index: int, now: float, canary: RawCounts | None,
         stable: RawCounts | None, tolerances: Tolerances) -> Look:
    """Compare the canary with the stable on their counts since the step's baseline.

    Without a baseline for this step, this check takes it (no evidence yet). A counter below
    what the last check saw starts a new baseline, carrying the e-values reached so far."""
    threshold = 1 / tolerances.alpha_per_test
    if previous is None or previous.step_index != step_index:
        return Look(baseline(step_index, now, canary, stable), threshold,
                    note="baseline taken now: the comparison counts from here")
    gone = [role for role, raw, seen in (("canary", canary, previous.seen_canary),
                                         ("stable", stable, previous.seen_stable))
            if raw is None and seen.requests > 0]
    if gone:  # a series seen before is missing now: no evidence, and no reason to restart
        return Look(previous, threshold, log_e_errors=previous.last_errors,
                    log_e_latency=previous.last_latency,
                    note=f"no counters for the {' and '.join(gone)} at this check")
    c_now, s_now = Tally.of(canary), Tally.of(stable)
    if c_now.below(previous.seen_canary) or s_now.below(previous.seen_stable):
        fresh = baseline(step_index, now, canary, stable).model_copy(update={
            "carried_errors": previous.last_errors, "carried_latency": previous.last_latency,
            "last_errors": previous.last_errors, "last_latency": previous.last_latency,
            "resets": previous.resets + 1})
        return Look(fresh, threshold, log_e_errors=previous.last_errors,
                    log_e_latency=previous.last_latency,
                    note="a counter went backwards (a pod restarted): new baseline, the "
                    "evidence so far carried")
    c, s = c_now.minus(previous.canary), s_now.minus(previous.stable)
    alpha, tolerance, floor = tolerances.alpha_per_test, tolerances.tolerance, tolerances.floor
    errors = compare(Counts(c.requests, c.errors), Counts(s.requests, s.errors), alpha=alpha,
                     tolerance=tolerance, floor=floor)
    latency = None
    if tolerances.bounds_ms and c.bucketed > 0 and s.bucketed > 0:
        latency = latency_test(c.histogram(), s.histogram(), tolerances.bounds_ms, alpha=alpha,
                               tolerance=tolerance, floor=floor)
    log_errors = previous.carried_errors + errors.log_e
    log_latency = previous.carried_latency + (latency.log_e if latency else 0.0)
    kept = previous.model_copy(update={"seen_canary": c_now, "seen_stable": s_now,
                                       "last_errors": log_errors, "last_latency": log_latency})
    return Look(kept, threshold, errors, latency, log_errors, log_latency, errors.reason, (c, s))


def may_conclude(previous: Baseline | None, step_index: int, canary: RawCounts | None,
                 stable: RawCounts | None, tolerances: Tolerances) -> bool:
    """Whether ``look`` on these counts can be conclusive; False only when it cannot (a
    cheap bound, for the looks between checks: most of them conclude nothing).

    With both tolerances above 0 each e-value is the smaller of its two parts, so the closed-
    form relative part (no maximisation) bounds it from above; counts the full test cannot use
    give 1 there, and at most 1 here (``max(0, ·)`` of the log)."""
    if previous is None or previous.step_index != step_index or canary is None \
            or stable is None or tolerances.tolerance <= 0 or tolerances.floor <= 0:
        return True
    c = _since(canary, previous.canary, previous.seen_canary)
    s = _since(stable, previous.stable, previous.seen_stable)
    if c is None or s is None:  # a counter went backwards: the full look takes a new baseline
        return True
    limit, tolerance = math.log(1 / tolerances.alpha_per_test), tolerances.tolerance
    if _upper(c[0], c[1], s[0], s[1], tolerance) >= limit - previous.carried_errors:
        return True
    if not (tolerances.bounds_ms and c[2] > 0 and s[2] > 0):
        return False
    ups = []
    for bound in tolerances.bounds_ms:
        mine, theirs = _at_bound(c, bound), _at_bound(s, bound)
        ups.append(0.0 if mine is None or theirs is None or mine[0] != theirs[0] else
                   _upper(c[2], c[2] - mine[1], s[2], s[2] - theirs[1], tolerance))
    top = max(ups)
    latency = top + math.log(sum(math.exp(u - top) for u in ups) / len(ups))
    return latency >= limit - previous.carried_latency


Since = tuple[float, float, float, list[tuple[float, float]]]  # requests, 5xx, +Inf, buckets


def _since(now: RawCounts, base: Tally, seen: Tally) -> Since | None:
    """``now`` minus ``base`` as plain numbers; None when a counter is below ``seen``."""
    if now.requests < seen.requests or now.errors < seen.errors or now.bucketed < seen.bucketed:
        return None
    before, last = dict(base.buckets), dict(seen.buckets)
    if any(c < last.get(le, 0.0) for le, c in now.buckets):
        return None
    return (now.requests - base.requests, now.errors - base.errors,
            now.bucketed - base.bucketed,
            [(le, c - before.get(le, 0.0)) for le, c in now.buckets])


def _at_bound(counts: Since, bound: float) -> tuple[float, float] | None:
    """(the first bucket bound >= ``bound``, the requests at or below it), as
    ``sequential.slow_requests`` reads them (a running maximum, at most every request)."""
    seen = -math.inf
    for le, count in sorted(counts[3]):
        if math.isnan(count):
            return None
        seen = max(seen, count)
        if le >= bound:
            return (le, min(seen, counts[2])) if math.isfinite(counts[2]) else None
    return None


def _upper(c_requests: float, c_events: float, s_requests: float, s_events: float,
           tolerance: float) -> float:
    """``max(0, log e_relative)`` on clamped counts: above the full test's log e-value."""
    return max(0.0, log_e_relative(Counts(c_requests, min(c_events, c_requests)),
                                   Counts(s_requests, min(s_events, s_requests)), tolerance))


@dataclass(frozen=True)
class Excuse:
    """A failing guard the stable fails too, in the same window: the numbers side by side."""

    check: str  # "success rate", "p99", "p95", "burn rate"
    canary: float
    stable: float
    threshold: float
    unit: str


def _as_bad(canary: float, stable: float, tolerance: float, floor: float = 0.0) -> bool:
    return canary <= stable + max(tolerance * stable, floor)


def excuses(failing: list[str], canary: CanaryMetrics, stable: CanaryMetrics | None,
            slo: SLOThresholds, tolerance: float, floor: float,
            since: tuple[Tally, Tally] | None = None) -> list[Excuse] | None:
    """The excuse of every failing guard, or None when one of them has none (the canary is to
    blame). Errors go through ``sequential.service_wide``; latency too, on ``since`` (the
    canary's and the stable's counts since the step began), or without them compares the
    quantiles the guards measured (the stable's above the SLO, the canary's within tolerance
    of it)."""
    if stable is None or not failing or stable.request_rate is None:
        return None
    found: list[Excuse] = []
    errors_wide: Excuse | None = None
    if canary.success_rate is not None and stable.success_rate is not None:
        wide = service_wide(Counts(1.0, 1 - canary.success_rate / 100),
                            Counts(1.0, 1 - stable.success_rate / 100),
                            success_rate=slo.success_rate, tolerance=tolerance, floor=floor)
        if wide.errors:
            errors_wide = Excuse("success rate", canary.success_rate, stable.success_rate,
                                 slo.success_rate, "%")
    for name in failing:
        if name == "success rate" and errors_wide is not None:
            found.append(errors_wide)
            continue
        if name == "burn rate":
            burning = _burn_excuse(canary, stable, slo, tolerance, floor)
            if burning is not None:
                found.append(burning)
                continue
            return None
        quantiles = {"p99": (canary.latency_p99_ms, stable.latency_p99_ms, slo.latency_p99_ms),
                     "p95": (canary.latency_p95_ms, stable.latency_p95_ms, slo.latency_p95_ms)}
        if name in quantiles and since is not None:
            slow = _slow_excuse(name, since, quantiles[name][2], tolerance, floor)
            if slow is not None:
                found.append(slow)
                continue
            return None
        if name in quantiles:
            mine, theirs, ceiling = quantiles[name]
            if (mine is not None and theirs is not None and ceiling is not None
                    and theirs > ceiling and _as_bad(mine, theirs, tolerance)):
                found.append(Excuse(name, mine, theirs, ceiling, " ms"))
                continue
        return None
    return found


def _slow_excuse(name: str, since: tuple[Tally, Tally], ceiling: float | None,
                 tolerance: float, floor: float) -> Excuse | None:
    """The stable's share of requests above the quantile's SLO (its bucket) since the step
    began is beyond 1 - quantile — its quantile breaks the SLO too — and the canary's share is
    within the tolerances of it."""
    if ceiling is None:
        return None
    quantile = 0.99 if name == "p99" else 0.95
    canary, stable = since
    bound = bucket_bound(ceiling)
    wide = service_wide(Counts(canary.requests, canary.errors),
                        Counts(stable.requests, stable.errors), canary.histogram(),
                        stable.histogram(), success_rate=0.0, latency_bound_ms=bound,
                        quantile=quantile, tolerance=tolerance, floor=floor)
    if not wide.latency:
        return None
    return Excuse(f"{name} (requests over {bound:g} ms since the step began)",
                  100 * wide.canary_slow_share, 100 * wide.stable_slow_share,
                  100 * (1 - quantile), "%")


def _burn_excuse(canary: CanaryMetrics, stable: CanaryMetrics, slo: SLOThresholds,
                 tolerance: float, floor: float) -> Excuse | None:
    """The stable burns its budget faster than the factor over every window the service's
    SLO names, and over the analysis window (the one both subsets share: over the burn
    windows the stable's counts reach back before the canary had any traffic) the canary's
    error ratio is within the tolerances of the stable's."""
    if canary.success_rate is None or stable.success_rate is None:
        return None
    own = {duration(w) for w in slo.burn_windows}
    theirs = [(w, r) for w, r in stable.error_ratios if not own or w in own]
    mine = [(w, r) for w, r in canary.error_ratios if not own or w in own]
    budget = 1 - slo.availability / 100
    if not theirs or not mine or any(math.isnan(r) or r / budget <= slo.burn_rate_factor
                                     for _, r in theirs):
        return None
    if not _as_bad(1 - canary.success_rate / 100, 1 - stable.success_rate / 100, tolerance,
                   floor):
        return None
    (window, ratio), (_, stable_ratio) = mine[0], theirs[0]
    return Excuse(f"burn rate over {window}", ratio / budget, stable_ratio / budget,
                  slo.burn_rate_factor, "x")


class Decision(StrEnum):
    REGRESSION = "regression"  # the comparison is conclusive: roll back now
    FAIL = "fail"  # a guard failed, the canary to blame: counts towards failure_threshold
    SERVICE_WIDE = "service_wide"  # every failing guard fails on the stable too: hold
    NO_DATA = "no_data"
    PASS = "pass"


def decide(guards: CheckResult, comparison: Look | None,
           excused: list[Excuse] | None) -> Decision:
    """The check's outcome (see the module docstring for the order)."""
    if comparison is not None and comparison.conclusive:
        return Decision.REGRESSION
    if guards.verdict is Verdict.FAIL:
        return Decision.SERVICE_WIDE if excused else Decision.FAIL
    if guards.verdict is Verdict.NO_DATA:
        return Decision.NO_DATA
    return Decision.PASS


def failing_checks(guards: CheckResult) -> list[str]:
    return [c.name for c in guards.checks if c.verdict is Verdict.FAIL]
