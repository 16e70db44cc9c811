"""The decision of one analysis check: the canary against its stable (pure)."""

from __future__ import annotations

import math
import random

import pytest

from jobs.domain import comparison as cmp
from jobs.domain.promql import CanaryMetrics, RawCounts, SLOThresholds, evaluate
from jobs.domain.rollout import Event, Phase, apply, start

SLO = SLOThresholds(success_rate=99.0, latency_p99_ms=100.0)
KNOBS = cmp.Tolerances(alpha=0.01, tolerance=0.1, floor=0.001, steps=1, bounds_ms=(50.0, 100.0))


def raw(requests: float, errors: float, slow100: float = 0.0, slow50: float = 0.0) -> RawCounts:
    return RawCounts(requests=requests, errors=errors,
                     buckets=((50.0, requests - slow50), (100.0, requests - slow100)),
                     bucketed=requests)


def healthy(success: float = 100.0, p99: float = 40.0) -> CanaryMetrics:
    return CanaryMetrics(request_rate=10.0, success_rate=success, latency_p99_ms=p99)


def test_alpha_is_split_between_the_two_tests_and_across_steps() -> None:
    assert cmp.Tolerances(alpha=0.01, steps=1).alpha_per_test == pytest.approx(0.005)
    assert cmp.Tolerances(alpha=0.01, steps=5).alpha_per_test == pytest.approx(0.001)


def test_latency_bounds_are_the_p99_slo_and_half_of_it_on_istio_buckets() -> None:
    assert cmp.latency_bounds(100) == (50.0, 100.0)
    assert cmp.latency_bounds(300) == (250.0, 500.0)


def test_the_first_look_of_a_step_takes_the_baseline_and_decides_nothing() -> None:
    first = cmp.look(None, 0, 10.0, raw(1000, 1), raw(9000, 9), KNOBS)
    assert first.note.startswith("baseline taken")
    assert first.baseline.canary.requests == 1000 and first.conclusive == ()
    # a new step is a new baseline, even with one kept from the step before
    again = cmp.look(first.baseline, 1, 20.0, raw(2000, 2), raw(18000, 18), KNOBS)
    assert again.baseline.step_index == 1 and again.baseline.canary.requests == 2000


def test_a_severe_regression_is_conclusive_on_counts_since_the_baseline() -> None:
    base = cmp.look(None, 0, 0.0, raw(5000, 5), raw(45000, 45), KNOBS).baseline
    # since the baseline: canary 200 requests, 40 errors; stable 200, 0.2 errors
    look = cmp.look(base, 0, 4.0, raw(5200, 45), raw(45200, 45.2), KNOBS)
    assert look.errors is not None
    assert look.errors.canary.requests == pytest.approx(200)
    assert look.errors.canary.events == pytest.approx(40)
    assert look.conclusive == ("errors",)
    assert look.log_e_errors >= math.log(look.threshold) and look.threshold == pytest.approx(200)
    guards = evaluate(healthy(success=80.0), SLO)
    assert cmp.decide(guards, look, None) is cmp.Decision.REGRESSION


def test_a_canary_as_good_as_stable_is_never_conclusive() -> None:
    base = cmp.look(None, 0, 0.0, raw(0, 0), raw(0, 0), KNOBS).baseline
    look = cmp.look(base, 0, 60.0, raw(600, 0.6, slow100=6), raw(5400, 5.4, slow100=54), KNOBS)
    assert look.conclusive == ()
    assert cmp.decide(evaluate(healthy(), SLO), look, None) is cmp.Decision.PASS


def test_a_slow_canary_is_conclusive_on_the_latency_test() -> None:
    base = cmp.look(None, 0, 0.0, raw(0, 0), raw(0, 0), KNOBS).baseline
    look = cmp.look(base, 0, 30.0, raw(300, 0, slow100=150, slow50=300),
                    raw(2700, 0, slow100=2.7, slow50=27), KNOBS)
    assert look.conclusive == ("latency",)


def test_a_counter_reset_takes_a_new_baseline_and_carries_the_evidence() -> None:
    base = cmp.look(None, 0, 0.0, raw(1000, 1), raw(9000, 9), KNOBS).baseline
    mid = cmp.look(base, 0, 2.0, raw(1050, 6), raw(9050, 9.05), KNOBS)
    assert 0 < mid.log_e_errors < math.log(mid.threshold)  # some evidence, not enough
    reset = cmp.look(mid.baseline, 0, 4.0, raw(10, 2), raw(9100, 9.1), KNOBS)
    assert reset.note.startswith("a counter went backwards")
    assert reset.baseline.resets == 1 and reset.baseline.canary.requests == 10
    assert reset.log_e_errors == pytest.approx(mid.log_e_errors)
    assert reset.conclusive == ()  # no evidence at the look that found the reset
    after = cmp.look(reset.baseline, 0, 6.0, raw(60, 7), raw(9150, 9.15), KNOBS)
    assert after.log_e_errors == pytest.approx(reset.baseline.carried_errors
                                               + (after.errors.log_e if after.errors else 0))


def test_a_series_absent_at_the_baseline_counts_zero() -> None:
    base = cmp.look(None, 0, 0.0, None, raw(9000, 9), KNOBS).baseline
    assert base.canary == cmp.Tally()
    look = cmp.look(base, 0, 4.0, raw(200, 40), raw(9200, 9.2), KNOBS)
    assert look.errors is not None and look.errors.canary.requests == pytest.approx(200)


def test_service_wide_errors_excuse_the_canary_and_hold() -> None:
    canary, stable = healthy(success=95.0), healthy(success=95.1)
    guards = evaluate(canary, SLO)
    excused = cmp.excuses(cmp.failing_checks(guards), canary, stable, SLO, 0.1, 0.001)
    assert excused is not None and excused[0].check == "success rate"
    assert (excused[0].canary, excused[0].stable) == (95.0, 95.1)
    assert cmp.decide(guards, None, excused) is cmp.Decision.SERVICE_WIDE


def test_a_canary_worse_than_a_bad_stable_is_not_excused() -> None:
    canary, stable = healthy(success=80.0), healthy(success=97.0)
    guards = evaluate(canary, SLO)
    assert cmp.excuses(cmp.failing_checks(guards), canary, stable, SLO, 0.1, 0.001) is None
    assert cmp.decide(guards, None, None) is cmp.Decision.FAIL


def test_a_stable_within_its_slo_excuses_nothing() -> None:
    canary, stable = healthy(success=98.9), healthy(success=99.5)
    guards = evaluate(canary, SLO)
    assert cmp.excuses(cmp.failing_checks(guards), canary, stable, SLO, 0.1, 0.001) is None


def test_service_wide_latency_compares_the_measured_quantiles() -> None:
    canary, stable = healthy(p99=300.0), healthy(p99=290.0)
    guards = evaluate(canary, SLO)
    excused = cmp.excuses(cmp.failing_checks(guards), canary, stable, SLO, 0.1, 0.001)
    assert excused is not None and excused[0].check == "p99"
    worse = healthy(p99=400.0)
    assert cmp.excuses(cmp.failing_checks(evaluate(worse, SLO)), worse, stable, SLO, 0.1,
                       0.001) is None


def test_service_wide_latency_from_the_counts_since_the_step_began() -> None:
    # The stable's quantiles are not measured (only the canary's): its p99 breaks the SLO
    # when more than 1 % of its requests since the step began were slower than the bound.
    base = cmp.look(None, 0, 0.0, raw(1000, 1, 10, 10), raw(9000, 9, 90, 90), KNOBS).baseline
    slow_stable = cmp.look(base, 0, 5.0, raw(1200, 1, 16, 16), raw(10_800, 9, 144, 144), KNOBS)
    canary, unmeasured = healthy(p99=300.0), CanaryMetrics(10.0, 99.9, None)
    guards = evaluate(canary, SLO)
    excused = cmp.excuses(cmp.failing_checks(guards), canary, unmeasured, SLO, 0.1, 0.001,
                          slow_stable.since)
    assert excused is not None and excused[0].check.startswith("p99 (requests over 100 ms")
    assert (excused[0].canary, excused[0].stable) == pytest.approx((3.0, 3.0))
    assert cmp.decide(guards, slow_stable, excused) is cmp.Decision.SERVICE_WIDE
    # The canary slower than that stable: to blame; a stable within its SLO excuses nothing.
    slower = cmp.look(base, 0, 5.0, raw(1200, 1, 30, 30), raw(10_800, 9, 144, 144), KNOBS)
    assert cmp.excuses(["p99"], canary, unmeasured, SLO, 0.1, 0.001, slower.since) is None
    calm = cmp.look(base, 0, 5.0, raw(1200, 1, 16, 16), raw(10_800, 9, 95, 95), KNOBS)
    assert cmp.excuses(["p99"], canary, unmeasured, SLO, 0.1, 0.001, calm.since) is None


def test_the_p95_slo_bucket_is_counted_beside_the_tests_bounds() -> None:
    assert cmp.counted_bounds(100, None) == (50.0, 100.0)
    assert cmp.counted_bounds(300, 80) == (100.0, 250.0, 500.0)


def test_no_data_stays_no_data_and_a_regression_wins_over_it() -> None:
    quiet = CanaryMetrics(request_rate=0.2, success_rate=100.0, latency_p99_ms=40.0)
    guards = evaluate(quiet, SLO)
    assert cmp.decide(guards, None, None) is cmp.Decision.NO_DATA
    base = cmp.look(None, 0, 0.0, raw(0, 0), raw(0, 0), KNOBS).baseline
    look = cmp.look(base, 0, 60.0, raw(200, 60), raw(2000, 2), KNOBS)
    assert cmp.decide(guards, look, None) is cmp.Decision.REGRESSION


# -- the machine's two new events -----------------------------------------------------------


def test_a_regression_rolls_back_at_once_whatever_the_failure_threshold() -> None:
    rollout = start(rollout_id="r1", service="svc", namespace="ns", steps=(10, 50), fixed=False,
                    interval_s=5, failure_threshold=5, no_data_policy="hold", deadline_s=60,
                    requested_by="U1", channel="C1", now=0.0)
    rolled = apply(rollout, Event.REGRESSION, 5.0, "errors")
    assert rolled.phase is Phase.ROLLED_BACK and rolled.weight == 0
    assert rolled.history[-1].event is Event.REGRESSION


def test_service_wide_holds_without_counting_a_failure_and_never_advances() -> None:
    rollout = start(rollout_id="r1", service="svc", namespace="ns", steps=(10, 50), fixed=False,
                    interval_s=5, failure_threshold=2, no_data_policy="rollback", deadline_s=1,
                    requested_by="U1", channel="C1", now=0.0)
    held = apply(rollout, Event.SERVICE_WIDE, 5.0)
    assert held.phase is Phase.HOLDING and held.weight == 10 and held.failed_checks == 0
    assert held.service_wide_since == 5.0 and held.next_check_at == 10.0
    still = apply(held, Event.SERVICE_WIDE, 100.0)  # no deadline: it is not missing data
    assert still.phase is Phase.HOLDING and still.service_wide_since == 5.0
    over = apply(still, Event.CHECK_PASSED, 105.0)
    assert over.service_wide_since is None and over.step_index == 1


def test_service_wide_keeps_a_gated_step_waiting() -> None:
    rollout = start(rollout_id="r1", service="svc", namespace="ns", steps=(10, 50), fixed=False,
                    interval_s=5, failure_threshold=2, no_data_policy="hold", deadline_s=60,
                    requested_by="U1", channel="C1", now=0.0)
    gated = apply(rollout, Event.GATE, 5.0)
    held = apply(gated, Event.SERVICE_WIDE, 10.0)
    assert held.phase is Phase.AWAITING_APPROVAL and held.resume_phase is Phase.PROGRESSING


def test_a_rollout_needs_a_baseline_until_its_step_has_one() -> None:
    rollout = start(rollout_id="r1", service="svc", namespace="ns", steps=(10, 50), fixed=False,
                    interval_s=5, failure_threshold=2, no_data_policy="hold", deadline_s=60,
                    requested_by="U1", channel="C1", now=0.0)
    assert rollout.needs_baseline
    taken = rollout.model_copy(update={"baseline": cmp.baseline(0, 1.0, None, None)})
    assert not taken.needs_baseline
    advanced = apply(taken, Event.CHECK_PASSED, 5.0)
    assert advanced.needs_baseline  # the next step counts from its own start


def test_a_burn_rate_the_stable_shares_is_excused_even_after_the_errors_stopped() -> None:
    slo = SLOThresholds(success_rate=99.0, latency_p99_ms=100.0, burn_windows=(300.0, 3600.0))
    ratios = (("5m", 0.03), ("1h", 0.02))
    canary = CanaryMetrics(10.0, 100.0, 40.0, error_ratios=ratios)
    stable = CanaryMetrics(90.0, 100.0, 40.0, error_ratios=(("5m", 0.031), ("1h", 0.021)))
    guards = evaluate(canary, slo)
    assert cmp.failing_checks(guards) == ["burn rate"]
    excused = cmp.excuses(cmp.failing_checks(guards), canary, stable, slo, 0.1, 0.001)
    assert excused is not None and excused[0].check == "burn rate over 5m"
    calm = CanaryMetrics(90.0, 100.0, 40.0, error_ratios=(("5m", 0.0), ("1h", 0.0)))
    assert cmp.excuses(["burn rate"], canary, calm, slo, 0.1, 0.001) is None


def test_over_long_windows_a_stable_diluted_by_its_past_still_excuses_the_canary() -> None:
    slo = SLOThresholds(success_rate=99.0, latency_p99_ms=100.0, burn_windows=(300.0, 3600.0))
    canary = CanaryMetrics(10.0, 95.0, 40.0, error_ratios=(("5m", 0.05), ("1h", 0.05)))
    stable = CanaryMetrics(90.0, 95.0, 40.0, error_ratios=(("5m", 0.03), ("1h", 0.02)))
    excused = cmp.excuses(["success rate", "burn rate"], canary, stable, slo, 0.1, 0.001)
    assert excused is not None and [e.check for e in excused] == ["success rate",
                                                                  "burn rate over 5m"]


def test_a_subset_whose_series_went_missing_is_no_evidence_and_keeps_the_baseline() -> None:
    base = cmp.look(None, 0, 0.0, raw(1000, 1), raw(9000, 9), KNOBS).baseline
    missing = cmp.look(base, 0, 2.0, None, raw(9100, 9.1), KNOBS)
    assert missing.note == "no counters for the canary at this check"
    assert missing.baseline == base and missing.conclusive == ()
    back = cmp.look(missing.baseline, 0, 4.0, raw(1200, 41), raw(9200, 9.2), KNOBS)
    assert back.errors is not None and back.errors.canary.requests == pytest.approx(200)


def test_the_cheap_bound_never_skips_a_conclusive_look() -> None:
    rng = random.Random(7)
    base = cmp.look(None, 0, 0.0, raw(1000, 1, 10, 20), raw(9000, 9, 90, 180), KNOBS).baseline
    skipped = concluded = 0
    for _ in range(3000):
        n_c, n_s = rng.uniform(0, 400), rng.uniform(0, 4000)
        e_c, e_s = rng.uniform(0, 0.3) * n_c, rng.uniform(0, 0.01) * n_s
        slow_c, slow_s = rng.uniform(0, 0.2) * n_c, rng.uniform(0, 0.02) * n_s
        canary = raw(1000 + n_c, 1 + e_c, 10 + slow_c, 20 + 1.5 * slow_c)
        stable = raw(9000 + n_s, 9 + e_s, 90 + slow_s, 180 + 1.5 * slow_s)
        full = cmp.look(base, 0, 5.0, canary, stable, KNOBS)
        if not cmp.may_conclude(base, 0, canary, stable, KNOBS):
            skipped += 1
            assert not full.conclusive, (canary, stable)
        concluded += bool(full.conclusive)
    assert skipped > 100 and concluded > 100  # both kinds were tried
    assert cmp.may_conclude(None, 0, raw(1, 0), raw(1, 0), KNOBS)  # no baseline: look
