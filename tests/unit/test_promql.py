"""PromQL builders, result parsing and the SLO verdict (pure: no Prometheus here)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from jobs.domain.promql import (
    CanaryMetrics,
    SLOThresholds,
    Verdict,
    burn_rate,
    duration,
    error_ratio_query,
    evaluate,
    latency_query,
    parse_vector,
    parse_windowed,
    rate_window,
    request_rate_query,
    selector,
    success_rate_query,
)

WATCHED = [("payment-service", "production"), ("auth-service", "production")]
SLO = SLOThresholds(success_rate=99.9, latency_p99_ms=100, min_request_rate=1.0)
HEALTHY = CanaryMetrics(
    request_rate=2.0, success_rate=100.0, latency_p99_ms=40.0, latency_p95_ms=24.0
)


# --- builders ---------------------------------------------------------------------------------


def test_every_query_counts_only_the_destination_reporter_and_groups_by_version() -> None:
    for query in (
        request_rate_query(WATCHED, 30),
        success_rate_query(WATCHED, 30),
        latency_query(WATCHED, 30, 0.99),
        error_ratio_query(WATCHED, [300, 3600]),
    ):
        assert 'reporter="destination"' in query
        assert (
            "by (destination_service_name, destination_workload_namespace, destination_version"
            in query
        )
        assert 'destination_service_name=~"auth-service|payment-service"' in query


def test_one_query_covers_any_number_of_services() -> None:
    many = [(f"svc-{i}", "production") for i in range(1000)]
    query = request_rate_query(many, 30)
    assert query.count("rate(") == 1
    assert "svc-999" in query


def test_service_names_are_escaped_for_the_regex_and_the_string_literal() -> None:
    sel = selector([("a.b+c", "ns"), ('q"x', "ns")])
    # RE2 sees a\.b\+c; the PromQL string literal doubles the backslashes.
    assert r'destination_service_name=~"a\\.b\\+c|q\"x"' in sel


def test_no_services_builds_no_query() -> None:
    with pytest.raises(ValueError, match="no services"):
        request_rate_query([], 30)


def test_success_rate_fills_an_empty_error_numerator_per_group() -> None:
    query = success_rate_query(WATCHED, 30)
    errors, _, rest = query.partition(" or 0 * ")
    assert 'response_code=~"5.*"' in errors  # the numerator counts errors ...
    assert "response_code" not in rest  # ... and the denominator every request
    assert query.startswith("100 * (1 - (")


def test_latency_uses_the_le_buckets() -> None:
    query = latency_query(WATCHED, 30, 0.95)
    assert query.startswith("histogram_quantile(0.95, sum by (")
    assert ", le) (rate(istio_request_duration_milliseconds_bucket{" in query
    with pytest.raises(ValueError):
        latency_query(WATCHED, 30, 99)


def test_error_ratio_labels_each_window() -> None:
    query = error_ratio_query(WATCHED, [300, 3600])
    assert '"window", "5m"' in query and '"window", "1h"' in query
    assert "[5m]" in query and "[1h]" in query


@pytest.mark.parametrize(
    ("requested", "scrape", "expected"),
    [(1, 1, 5), (60, 1, 60), (30, 15, 75), (0, 0.5, 2.5)],
)
def test_rate_window_holds_at_least_four_scrapes(
    requested: float, scrape: float, expected: float
) -> None:
    assert rate_window(requested, scrape) == expected


@pytest.mark.parametrize(
    ("seconds", "literal"), [(5, "5s"), (4.2, "5s"), (300, "5m"), (3600, "1h"), (90, "90s")]
)
def test_duration_literals(seconds: float, literal: str) -> None:
    assert duration(seconds) == literal


def test_burn_rate_is_error_ratio_over_the_error_budget() -> None:
    assert burn_rate(0.0144, 99.9) == pytest.approx(14.4)
    with pytest.raises(ValueError, match="no error budget"):
        burn_rate(0.1, 100)


# --- parsing ----------------------------------------------------------------------------------


def _sample(service: str, version: str, value: str, **extra: str) -> dict[str, Any]:
    metric = {
        "destination_service_name": service,
        "destination_workload_namespace": "production",
        "destination_version": version,
        **extra,
    }
    return {"metric": metric, "value": [1700000000.0, value]}


def test_parse_vector_keys_by_service_namespace_version() -> None:
    result = [
        _sample("payment-service", "v1", "18.5"),
        _sample("payment-service", "v2", "NaN"),
        {"metric": {"destination_service_name": "x"}, "value": [0, "1"]},  # cannot be keyed
    ]
    parsed = parse_vector(result)
    assert parsed[("payment-service", "production", "v1")] == 18.5
    assert math.isnan(parsed[("payment-service", "production", "v2")])
    assert len(parsed) == 2
    assert parse_vector([]) == {}


def test_parse_windowed_splits_by_window_label() -> None:
    result = [
        _sample("payment-service", "v2", "0.1", window="5m"),
        _sample("payment-service", "v2", "0.02", window="1h"),
    ]
    assert parse_windowed(result) == {
        ("payment-service", "production", "v2"): {"5m": 0.1, "1h": 0.02}
    }


# --- evaluation -------------------------------------------------------------------------------


def test_healthy_canary_passes_with_measured_values() -> None:
    result = evaluate(HEALTHY, SLO)
    assert result.verdict is Verdict.PASS
    assert result.lines == [
        "request rate 2.0 req/s ≥ 1 req/s",
        "success rate 100.0% ≥ 99.9%",
        "p99 40 ms ≤ 100 ms",
    ]


def test_no_series_is_no_data() -> None:
    result = evaluate(None, SLO)
    assert result.verdict is Verdict.NO_DATA
    assert "no series" in result.summary


def test_empty_denominator_is_no_traffic_never_pass() -> None:
    # Rate 0 and a NaN success rate: what Prometheus answers for a version that got no requests.
    idle = CanaryMetrics(request_rate=0.0, success_rate=None, latency_p99_ms=None)
    result = evaluate(idle, SLOThresholds(success_rate=99.9, latency_p99_ms=100), 0.0)
    assert result.verdict is Verdict.NO_DATA
    assert result.lines == ["request rate 0.0 req/s < 0 req/s minimum"]


def test_empty_numerator_is_zero_errors() -> None:
    # The query turns "no 5xx series" into 0 errors, i.e. 100% success: a PASS, not NO_DATA.
    result = evaluate(HEALTHY, SLO)
    assert "success rate 100.0% ≥ 99.9%" in result.lines


def test_below_minimum_rate_is_no_data_even_when_everything_else_fails() -> None:
    trickle = CanaryMetrics(request_rate=0.4, success_rate=50.0, latency_p99_ms=900.0)
    result = evaluate(trickle, SLO)
    assert result.verdict is Verdict.NO_DATA
    assert result.lines == ["request rate 0.4 req/s < 1 req/s minimum"]


def test_minimum_rate_argument_overrides_the_slo() -> None:
    assert evaluate(HEALTHY, SLO, min_request_rate=5).verdict is Verdict.NO_DATA
    assert evaluate(HEALTHY, SLO, min_request_rate=0.5).verdict is Verdict.PASS


def test_failures_name_measured_and_threshold() -> None:
    bad = CanaryMetrics(request_rate=2.0, success_rate=91.2, latency_p99_ms=840.0)
    result = evaluate(bad, SLO)
    assert result.verdict is Verdict.FAIL
    assert "success rate 91.2% < 99.9%" in result.lines
    assert "p99 840 ms > 100 ms" in result.lines


def test_close_values_get_enough_decimals_not_to_look_equal() -> None:
    close = CanaryMetrics(request_rate=2.0, success_rate=99.86, latency_p99_ms=100.4)
    result = evaluate(close, SLO)
    assert "success rate 99.86% < 99.9%" in result.lines
    assert "p99 100.4 ms > 100 ms" in result.lines


def test_nan_latency_with_traffic_is_no_data_for_that_check() -> None:
    sample = CanaryMetrics(request_rate=2.0, success_rate=100.0, latency_p99_ms=math.nan)
    result = evaluate(sample, SLO)
    assert result.verdict is Verdict.NO_DATA
    assert "p99 no data (no latency samples)" in result.lines


def test_a_failure_outweighs_missing_data() -> None:
    sample = CanaryMetrics(request_rate=2.0, success_rate=80.0, latency_p99_ms=None)
    assert evaluate(sample, SLO).verdict is Verdict.FAIL


def test_p95_is_checked_only_when_the_slo_sets_it() -> None:
    slo = SLOThresholds(success_rate=99.9, latency_p99_ms=100, latency_p95_ms=20)
    result = evaluate(HEALTHY, slo)
    assert result.verdict is Verdict.FAIL
    assert "p95 24 ms > 20 ms" in result.lines
    assert not any(line.startswith("p95") for line in evaluate(HEALTHY, SLO).lines)


def test_burn_rate_fails_only_when_every_window_burns_too_fast() -> None:
    both = CanaryMetrics(2.0, 99.95, 40.0, error_ratios=(("5m", 0.02), ("1h", 0.015)))
    result = evaluate(both, SLO)
    assert result.verdict is Verdict.FAIL
    assert "burn rate 20.0x over 5m, 15.0x over 1h > 14.4x" in result.lines

    blip = CanaryMetrics(2.0, 99.95, 40.0, error_ratios=(("5m", 0.02), ("1h", 0.001)))
    result = evaluate(blip, SLO)
    assert result.verdict is Verdict.PASS
    assert "burn rate 20.0x over 5m, 1.0x over 1h, not all above 14.4x" in result.lines


def test_burn_rate_without_data_in_a_window_is_no_data() -> None:
    sample = CanaryMetrics(2.0, 100.0, 40.0, error_ratios=(("5m", 0.0), ("1h", math.nan)))
    result = evaluate(sample, SLO)
    assert result.verdict is Verdict.NO_DATA
    assert "burn rate no data over 1h" in result.lines


def test_a_service_is_judged_on_its_own_burn_windows_only() -> None:
    """The batched query holds every service's windows; each judgement keeps its own."""
    sample = CanaryMetrics(request_rate=10.0, success_rate=99.99, latency_p99_ms=10.0,
                           error_ratios=(("5m", 0.5), ("30m", 0.0001), ("1h", 0.5)))
    own = SLOThresholds(success_rate=99.0, latency_p99_ms=100.0, burn_windows=(300.0, 3600.0))
    other = SLOThresholds(success_rate=99.0, latency_p99_ms=100.0, burn_windows=(300.0, 1800.0))
    burn_own = next(c for c in evaluate(sample, own).checks if c.name == "burn rate")
    burn_other = next(c for c in evaluate(sample, other).checks if c.name == "burn rate")
    assert burn_own.verdict is Verdict.FAIL and "30m" not in burn_own.text
    assert burn_other.verdict is Verdict.PASS and "1h" not in burn_other.text
