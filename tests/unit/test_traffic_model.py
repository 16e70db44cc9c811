"""The traffic model counts exactly what it was told, on a clock the test moves."""

from __future__ import annotations

import pytest

from playground.mesh_weights import StaticWeights
from playground.traffic_model import (
    ISTIO_BUCKETS_MS,
    MeshTraffic,
    Profile,
    _Histogram,
    latency_segments,
    quantile,
)

SVC = ("payment-service", "production")


def interpolated_quantile(q: float, hist: _Histogram) -> float:
    """What Prometheus's histogram_quantile computes from cumulative buckets (the test oracle)."""
    rank = q * hist.count
    lower, below = 0.0, 0.0
    for le, cumulative in zip(ISTIO_BUCKETS_MS, hist.buckets, strict=True):
        if cumulative >= rank:
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    raise AssertionError("quantile above the last finite bucket")


@pytest.mark.parametrize("p99", [0.5, 0.7, 7.0, 25.0, 40.0, 49.9, 80.0, 250.0, 840.0, 100000.0])
def test_interpolated_p99_is_exactly_the_configured_latency(p99: float) -> None:
    hist = _Histogram()
    hist.add(1000.0, p99)
    assert interpolated_quantile(0.99, hist) == pytest.approx(p99)
    p95 = quantile(latency_segments(p99), 0.95)
    assert interpolated_quantile(0.95, hist) == pytest.approx(p95)
    assert p95 < p99


def model(clock: list[float]) -> MeshTraffic:
    traffic = MeshTraffic(default_rps=20.0, default_profile=Profile(), clock=lambda: clock[0])
    traffic.set_splits(StaticWeights({SVC: (90, 10)})())
    return traffic


def test_counts_are_elapsed_time_times_rate_times_weight() -> None:
    clock = [100.0]
    traffic = model(clock)
    traffic.set_profile(SVC, "v2", Profile(error_rate=0.25))
    clock[0] += 10
    assert traffic.request_count("destination", SVC, "v1", "200") == pytest.approx(180)
    assert traffic.request_count("destination", SVC, "v2", "200") == pytest.approx(15)
    assert traffic.request_count("destination", SVC, "v2", "503") == pytest.approx(5)
    assert traffic.request_count("source", SVC, "v2", "503") == pytest.approx(5)


def test_changes_apply_from_the_moment_they_are_made() -> None:
    clock = [0.0]
    traffic = model(clock)
    clock[0] += 5
    traffic.set_splits(StaticWeights({SVC: (50, 50)})())
    traffic.set_rps(SVC, 40.0)
    clock[0] += 5
    # 5 s at 20 req/s x 10% + 5 s at 40 req/s x 50%
    assert traffic.request_count("destination", SVC, "v2", "200") == pytest.approx(10 + 100)


def test_no_5xx_series_until_a_5xx_happens() -> None:
    clock = [0.0]
    traffic = model(clock)
    clock[0] += 1
    names = {s.labels["response_code"] for m in traffic.collect() for s in m.samples}
    assert names == {"200"}


def test_exposition_has_both_reporters_and_istio_buckets() -> None:
    clock = [0.0]
    traffic = model(clock)
    clock[0] += 1
    samples = [s for m in traffic.collect() for s in m.samples]
    assert {s.labels["reporter"] for s in samples} == {"source", "destination"}
    les = {s.labels["le"] for s in samples if s.name.endswith("_bucket")}
    assert les == {str(le) for le in ISTIO_BUCKETS_MS} | {"+Inf"}
    assert {s.name for s in samples} >= {
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_duration_milliseconds_sum",
        "istio_request_duration_milliseconds_count",
    }


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Profile(error_rate=1.5)
    with pytest.raises(ValueError, match="latency_ms"):
        Profile(latency_ms=0)
    with pytest.raises(ValueError, match="sum to 100"):
        StaticWeights({SVC: (90, 20)})


WEB = "cluster.local/ns/frontend/sa/web"


def sources(traffic: MeshTraffic) -> dict[tuple[str, str], float]:
    """(source_principal, source_workload_namespace) → destination-reported requests."""
    found: dict[tuple[str, str], float] = {}
    for metric in traffic.collect():
        for s in metric.samples:
            if s.name == "istio_requests_total" and s.labels["reporter"] == "destination":
                pair = (s.labels["source_principal"], s.labels["source_workload_namespace"])
                found[pair] = found.get(pair, 0.0) + s.value
    return found


def test_without_callers_the_source_is_unknown_as_istio_reports_it() -> None:
    clock = [0.0]
    traffic = model(clock)
    clock[0] += 10
    assert sources(traffic) == {("unknown", "unknown"): pytest.approx(200)}


def test_requests_split_evenly_among_callers_from_the_moment_they_are_set() -> None:
    clock = [0.0]
    traffic = model(clock)
    clock[0] += 5
    traffic.set_callers(SVC, [WEB, "jobs"])  # a principal (mTLS) and a namespace (plain text)
    clock[0] += 10
    assert sources(traffic) == {
        ("unknown", "unknown"): pytest.approx(100),
        (f"spiffe://{WEB}", "frontend"): pytest.approx(100),
        ("unknown", "jobs"): pytest.approx(100),
    }
    assert traffic.request_count("destination", SVC, "v2", "200", caller=WEB) == pytest.approx(10)
    # the totals every existing query sums are unchanged by who calls
    assert traffic.request_count("destination", SVC, "v1", "200") == pytest.approx(270)
    assert traffic.callers(SVC) == (WEB, "jobs")
    traffic.set_callers(SVC, [])
    assert traffic.callers(SVC) == ()
    traffic.set_callers(SVC, ["jobs"])
    traffic.reset()
    assert traffic.callers(SVC) == ()


def test_a_caller_that_is_neither_principal_nor_namespace_is_refused() -> None:
    traffic = model([0.0])
    traffic.set_callers(SVC, [WEB])
    for bad in ("Frontend", "cluster.local/ns/frontend", "ns/frontend/sa/web", ""):
        with pytest.raises(ValueError, match="principal"):
            traffic.set_callers(SVC, [bad])
    assert traffic.callers(SVC) == (WEB,)  # a refused change changes nothing
