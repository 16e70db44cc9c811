"""The sequential canary-vs-stable test: hand-computed e-values, its properties, and seeded
simulations of healthy and regressed canaries watched at every 1 s scrape."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator

import pytest

from jobs.domain.sequential import (
    RATE_PRIOR,
    Counts,
    compare,
    error_rate_test,
    latency_test,
    log_e_absolute,
    log_e_relative,
    service_wide,
    slow_requests,
)

INF = math.inf


# --- hand-computed e-values -------------------------------------------------------------------


def test_relative_part_by_hand() -> None:
    # Equal traffic and no tolerance: p0 = 1/2. Two canary errors, none in the stable: the
    # Beta(1/2, 1/2) mixture gives B(5/2, 1/2) / B(1/2, 1/2) = 3/8, the null's best 1/4: e = 1.5.
    assert log_e_relative(Counts(10, 2), Counts(10, 0), tolerance=0) == pytest.approx(
        math.log(1.5))
    # Three of three: 2^3 Γ(7/2) / (√π Γ(4)) = 15/6.
    assert log_e_relative(Counts(10, 3), Counts(10, 0), tolerance=0) == pytest.approx(
        math.log(2.5))
    # One of one is no evidence at all (e = 1), however lopsided it looks.
    assert log_e_relative(Counts(10, 1), Counts(10, 0), tolerance=0) == pytest.approx(0)


def test_relative_null_scales_with_traffic_and_tolerance() -> None:
    # 10 % of the traffic and a 10 % tolerance: p0 = 1.1 * 10 / (1.1 * 10 + 90) = 11/101.
    p0 = 11 / 101
    expected = math.log(3 / 8) - 2 * math.log(p0)
    assert log_e_relative(Counts(10, 2), Counts(90, 0), tolerance=0.1) == pytest.approx(expected)


def test_absolute_part_by_hand() -> None:
    # One request each, the canary's failed: the null q_c <= q_s is best at q_c = q_s = 1/2
    # (likelihood 1/4); the mixtures give a/(a+b) and b/(a+b).
    a, b = RATE_PRIOR
    expected = math.log(4 * a * b / (a + b) ** 2)
    assert log_e_absolute(Counts(1, 1), Counts(1, 0), floor=0) == pytest.approx(expected)


def test_the_verdict_is_the_smaller_part_unless_one_null_holds_the_other() -> None:
    canary, stable = Counts(200, 10), Counts(1800, 2)
    both = compare(canary, stable)
    assert both.log_e == min(both.log_e_relative, both.log_e_absolute)
    assert compare(canary, stable, floor=0).log_e == both.log_e_relative
    only_abs = compare(canary, stable, tolerance=0)
    assert only_abs.log_e == only_abs.log_e_absolute


def test_verdict_carries_threshold_rates_and_counts() -> None:
    verdict = error_rate_test(200, 40, 1800, 2, alpha=0.05)
    assert verdict.threshold == pytest.approx(20)
    assert verdict.conclusive and verdict.e_value >= 20
    assert verdict.canary_rate == pytest.approx(0.2) and verdict.stable_rate == pytest.approx(
        2 / 1800)
    assert verdict.canary == Counts(200, 40) and verdict.stable == Counts(1800, 2)
    assert verdict.reason == ""


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.2])
def test_a_canary_no_worse_than_stable_is_no_evidence(rate: float) -> None:
    for scale in (1, 10, 1000):
        same = compare(Counts(100 * scale, 100 * scale * rate), Counts(900 * scale,
                                                                         900 * scale * rate))
        better = compare(Counts(100 * scale, 50 * scale * rate), Counts(900 * scale,
                                                                          900 * scale * rate))
        assert same.log_e <= 0 and better.log_e <= 0
        assert not same.conclusive and not better.conclusive


def test_one_sided_swapping_the_subsets() -> None:
    worse, fine = Counts(500, 25), Counts(500, 1)
    assert compare(worse, fine).conclusive
    swapped = compare(fine, worse)
    assert swapped.log_e <= 0 and not swapped.conclusive


def test_evidence_grows_with_the_canary_errors() -> None:
    stable = Counts(9000, 9)  # 0.1 %: the null allows the canary 0.2 %, 2 errors of 1000
    values = [compare(Counts(1000, errors), stable).log_e for errors in range(0, 40)]
    assert all(v <= 0 for v in values[:3])  # inside the null: below 1, whatever the shape
    rising = values[2:]
    assert all(b > a for a, b in itertools.pairwise(rising))
    assert values[-1] > math.log(100)


def test_evidence_grows_with_requests_at_the_same_rates() -> None:
    values = [compare(Counts(100 * k, 1 * k), Counts(900 * k, 0.9 * k)).log_e
              for k in (1, 2, 4, 8, 16, 32)]
    assert values == sorted(values)
    assert values[-1] > math.log(100)


def test_tolerances_absorb_a_small_difference() -> None:
    canary, stable = Counts(10**6, 1200), Counts(9 * 10**6, 9000)  # 0.12 % vs 0.1 %
    assert not compare(canary, stable).conclusive
    assert compare(canary, stable, tolerance=0, floor=0).conclusive


def test_zero_counts() -> None:
    nothing = compare(Counts(100, 0), Counts(900, 0))
    assert nothing.log_e <= 0 and not nothing.conclusive
    assert log_e_relative(Counts(100, 0), Counts(900, 0)) == 0
    idle = compare(Counts(0, 0), Counts(900, 5))
    assert idle.log_e == 0 and idle.reason == "no canary requests"
    alone = compare(Counts(100, 50), Counts(0, 0))
    assert alone.log_e == 0 and alone.reason == "no stable requests"


def test_counter_reset_and_garbage_are_no_evidence() -> None:
    bad = Counts(100, 60)
    stable = Counts(900, 1)
    assert compare(bad, stable).conclusive
    negative = compare(Counts(-5, 60), stable)
    assert negative.log_e == 0 and "counter reset" in negative.reason
    backwards = compare(bad, stable, previous=(Counts(150, 60), stable))
    assert backwards.log_e == 0 and "went backwards" in backwards.reason
    assert compare(bad, stable, previous=(Counts(90, 50), Counts(800, 1))).conclusive
    for nan in (Counts(math.nan, 1), Counts(100, math.nan), Counts(INF, 1)):
        assert compare(nan, stable).reason == "a count is not a number"


def test_fractional_counts_and_more_errors_than_requests() -> None:
    exact = compare(Counts(200, 12), Counts(1800, 2)).log_e
    assert compare(Counts(200.4, 12.3), Counts(1799.6, 2.1)).log_e == pytest.approx(exact, abs=1)
    clamped = compare(Counts(10.0, 10.7), Counts(90, 0))
    assert clamped.canary == Counts(10.0, 10.0) and math.isfinite(clamped.log_e)


@pytest.mark.parametrize(("alpha", "tolerance", "floor"),
                         [(0, 0.1, 0.001), (1, 0.1, 0.001), (0.01, -1, 0.001), (0.01, 0.1, 1)])
def test_bad_knobs_are_refused(alpha: float, tolerance: float, floor: float) -> None:
    with pytest.raises(ValueError):
        compare(Counts(1, 0), Counts(1, 0), alpha=alpha, tolerance=tolerance, floor=floor)


# --- histograms -------------------------------------------------------------------------------


def test_slow_requests_snaps_up_to_a_bucket_and_repairs_dips() -> None:
    buckets = [(INF, 200.0), (50, 150.0), (100, 140.0), (250, 199.0)]  # unsorted, with a dip
    assert slow_requests(buckets, 100) == (100, Counts(200.0, 50.0))  # 150 kept at le=100
    assert slow_requests(buckets, 60) == (100, Counts(200.0, 50.0))
    assert slow_requests(buckets, 250) == (250, Counts(200.0, 1.0))
    assert slow_requests(buckets, 300) is None  # no finite bucket above it
    assert slow_requests([(50, 1.0), (100, 2.0)], 50) is None  # no +Inf
    assert slow_requests([(50, math.nan), (INF, 2.0)], 50) is None


def test_latency_e_value_is_the_mean_over_bounds() -> None:
    canary = [(50, 80.0), (100, 95.0), (INF, 100.0)]
    stable = [(50, 850.0), (100, 895.0), (INF, 900.0)]
    both = latency_test(canary, stable, [50, 100])
    each = [latency_test(canary, stable, [b]).log_e for b in (50, 100)]
    assert both.log_e == pytest.approx(math.log((math.exp(each[0]) + math.exp(each[1])) / 2))
    assert [r.bound_ms for r in both.bounds] == [50, 100]
    # A bound no bucket can answer counts as e = 1: the weights stay fixed.
    padded = latency_test(canary, stable, [50, 100, 5000])
    assert padded.bounds[2].reason and padded.log_e == pytest.approx(
        math.log((math.exp(each[0]) + math.exp(each[1]) + 1) / 3))
    with pytest.raises(ValueError):
        latency_test(canary, stable, [])


def test_latency_counter_reset_is_no_evidence() -> None:
    canary = [(100, 50.0), (INF, 100.0)]
    stable = [(100, 890.0), (INF, 900.0)]
    assert latency_test(canary, stable, [100]).conclusive
    earlier = ([(100, 60.0), (INF, 120.0)], stable)
    assert latency_test(canary, stable, [100], previous=earlier).log_e == 0


# --- service-wide -----------------------------------------------------------------------------


def test_service_wide_when_the_stable_is_as_bad() -> None:
    wide = service_wide(Counts(100, 5), Counts(900, 50), success_rate=99.9)
    assert wide.errors and wide.service_wide
    assert wide.canary_success_rate == pytest.approx(95) and wide.stable_success_rate == \
        pytest.approx(100 * (1 - 50 / 900))
    worse = service_wide(Counts(100, 20), Counts(900, 45), success_rate=99.9)
    assert not worse.errors  # the stable breaks the SLO, but the canary is far worse
    healthy = service_wide(Counts(100, 5), Counts(900, 0), success_rate=99.9)
    assert not healthy.service_wide


def test_service_wide_latency() -> None:
    slow = [(100, 95.0), (250, 100.0), (INF, 100.0)]  # 5 % above 100 ms: p99 above it
    fast = [(100, 899.0), (250, 900.0), (INF, 900.0)]
    wide = service_wide(Counts(100, 0), Counts(900, 0), slow, [(100, 855.0), (INF, 900.0)],
                        success_rate=99.9, latency_bound_ms=100)
    assert wide.latency and not wide.errors
    assert wide.canary_slow_share == pytest.approx(0.05)
    assert wide.stable_slow_share == pytest.approx(0.05)
    blamed = service_wide(Counts(100, 0), Counts(900, 0), slow, fast, success_rate=99.9,
                          latency_bound_ms=100)
    assert not blamed.service_wide
    blind = service_wide(Counts(100, 0), Counts(900, 0), success_rate=99.9)
    assert math.isnan(blind.canary_slow_share) and not blind.latency


# --- simulation -------------------------------------------------------------------------------

CANARY_RPS, STABLE_RPS = 10.0, 90.0  # 10 % of 100 req/s


def _poisson(rng: random.Random, mean: float) -> int:
    if mean >= 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, n, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def _seconds(rng: random.Random, rps: float, rate: float) -> Iterator[tuple[int, int]]:
    """(requests, events) each second: events and the others as independent Poisson streams,
    so that given the requests the events are binomial."""
    while True:
        events = _poisson(rng, rps * rate)
        yield events + _poisson(rng, rps * (1 - rate)), events


def _first_detection(rng: random.Random, canary_rate: float, stable_rate: float, seconds: int,
                     alpha: float = 0.01, tolerance: float = 0.1, floor: float = 0.001,
                     ) -> int | None:
    """The first 1 s look at which the test is conclusive, or None."""
    threshold = math.log(1 / alpha)
    canary, stable = _seconds(rng, CANARY_RPS, canary_rate), _seconds(rng, STABLE_RPS,
                                                                      stable_rate)
    nc = xc = ns = xs = 0
    for look in range(1, seconds + 1):
        (dnc, dxc), (dns, dxs) = next(canary), next(stable)
        nc, xc, ns, xs = nc + dnc, xc + dxc, ns + dns, xs + dxs
        c, s = Counts(nc, xc), Counts(ns, xs)
        # With a floor and a tolerance (or no floor) the relative part bounds the verdict from
        # above: the full test runs only where it could pass.
        if log_e_relative(c, s, tolerance) >= threshold and compare(
                c, s, alpha=alpha, tolerance=tolerance, floor=floor).conclusive:
            return look
    return None


@pytest.mark.parametrize(("rate", "alpha", "tolerance", "floor", "runs"), [
    (0.001, 0.01, 0.1, 0.001, 150),  # the default policy
    (0.01, 0.01, 0.1, 0.001, 150),
    (0.01, 0.1, 0.0, 0.0, 200),  # no tolerance at a large alpha: crossings are frequent enough
    (0.05, 0.1, 0.0, 0.0, 200),  # to see whether the rate stays at or below alpha
])
def test_healthy_canaries_are_rarely_flagged(rate: float, alpha: float, tolerance: float,
                                             floor: float, runs: int) -> None:
    rng = random.Random(20220814)
    flagged = sum(_first_detection(rng, rate, rate, 600, alpha, tolerance, floor) is not None
                  for _ in range(runs))
    margin = 3 * math.sqrt(alpha * (1 - alpha) / runs)  # three standard errors
    assert flagged / runs <= alpha + margin


def test_severe_regression_is_caught_within_the_first_looks() -> None:
    rng = random.Random(7)
    looks = [_first_detection(rng, 0.2, 0.001, 30) for _ in range(300)]
    assert None not in looks
    caught = sorted(look for look in looks if look is not None)
    assert caught[len(caught) // 2] <= 2  # the median: the second 1 s scrape
    assert caught[int(0.99 * len(caught))] <= 6


def test_mild_regression_is_caught_eventually() -> None:
    rng = random.Random(11)
    looks = [_first_detection(rng, 0.01, 0.001, 900) for _ in range(100)]
    assert sum(look is not None for look in looks) >= 95  # within 15 minutes


def _latency_seconds(rng: random.Random, rps: float, median_ms: float,
                     ) -> Iterator[tuple[int, int, int]]:
    """(requests, above 50 ms, above 100 ms) each second, log-normal latency."""
    sigma = math.log(80 / 20) / 2.3263478740408408  # p99 = 4 x median

    def above(bound: float) -> float:
        return 0.5 * math.erfc(math.log(bound / median_ms) / sigma / math.sqrt(2))

    p50, p100 = above(50), above(100)
    while True:
        top = _poisson(rng, rps * p100)
        middle = _poisson(rng, rps * (p50 - p100))
        yield top + middle + _poisson(rng, rps * (1 - p50)), top + middle, top


def _histogram(total: int, above50: int, above100: int) -> list[tuple[float, float]]:
    return [(50, total - above50), (100, total - above100), (250, total), (INF, total)]


@pytest.mark.parametrize(("slowdown", "expect_caught"), [(1.5, True), (1.0, False)])
def test_latency_regression_is_caught(slowdown: float, expect_caught: bool) -> None:
    rng = random.Random(3)
    runs, caught = 40, 0
    for _ in range(runs):
        canary = _latency_seconds(rng, CANARY_RPS, 20 * slowdown)  # p99 80 ms, or 120 ms
        stable = _latency_seconds(rng, STABLE_RPS, 20)
        c, s = [0, 0, 0], [0, 0, 0]
        for _ in range(300):
            c = [a + b for a, b in zip(c, next(canary), strict=True)]
            s = [a + b for a, b in zip(s, next(stable), strict=True)]
            if latency_test(_histogram(*c), _histogram(*s), [50, 100]).conclusive:
                caught += 1
                break
    if expect_caught:
        assert caught == runs  # within 5 minutes
    else:
        assert caught <= 2
