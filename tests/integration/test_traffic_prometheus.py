"""The real Prometheus scraping the mesh traffic generator, read through MetricsSource."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobs.adapters.prometheus import MetricsSource
from jobs.domain.authz import Caller, observed_callers, traffic_query
from jobs.domain.promql import CanaryMetrics, SeriesKey, SLOThresholds, Verdict, evaluate
from meshbot.errors import MetricsUnavailable
from playground.mesh_weights import StaticWeights, VirtualServiceWeights
from playground.prometheus_server import PrometheusServer
from playground.sample_mesh import virtual_service
from playground.traffic import TrafficGenerator
from tests.fixtures.prometheus import BULK_SERVICES, NAMESPACE, RUNBOOK_SERVICES
from tests.fixtures.real_cluster import RealCluster

T = TypeVar("T")
WINDOW = 5.0  # seconds: rate_window(…, 1 s scrapes) gives four scrapes plus one of margin
SLO = SLOThresholds(success_rate=99.9, latency_p99_ms=100, min_request_rate=1.0)
QUERIES_PER_FETCH = 4  # rate, p99, p95, error ratio over the analysis and burn windows


def eventually(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 25.0) -> T:
    """Probe until ``done`` holds or the deadline passes; the last value is in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s; last value: {value!r}")
        time.sleep(0.25)  # a scrape is 1 s: probing faster only adds load; bounded by deadline


def near(value: float | None, expected: float, tolerance: float) -> bool:
    return value is not None and abs(value - expected) <= tolerance


@pytest.fixture
def source(prometheus: PrometheusServer) -> Any:
    with MetricsSource(prometheus.url, timeout=5, scrape_interval=1.0, burn_windows=(5, 30)) as ms:
        yield ms


def key(service: str, version: str) -> SeriesKey:
    return (service, NAMESPACE, version)


def test_fetch_tells_stable_and_canary_apart_and_sees_injected_errors(
    traffic: TrafficGenerator, source: MetricsSource
) -> None:
    traffic.set_profile("payment-service", subset="canary", error_rate=0.1, latency_ms=250)
    traffic.set_profile("auth-service", subset="canary", latency_ms=80)
    watched = [(s, NAMESPACE) for s in ("payment-service", "auth-service", "order-service")]

    def settled(m: dict[SeriesKey, CanaryMetrics]) -> bool:
        pay, auth = m.get(key("payment-service", "v2")), m.get(key("auth-service", "v2"))
        return (
            pay is not None
            and auth is not None
            and near(pay.success_rate, 90.0, 0.05)  # once the window holds only new data
            and near(pay.latency_p99_ms, 250, 5)
            and near(auth.latency_p99_ms, 80, 2)
        )

    metrics = eventually(lambda: source.fetch(watched, WINDOW), settled)
    started = time.perf_counter()
    metrics = source.fetch(watched, WINDOW)
    print(f"fetch of 3 services: {(time.perf_counter() - started) * 1000:.0f} ms")

    for service in ("payment-service", "auth-service", "order-service"):
        stable, canary = metrics[key(service, "v1")], metrics[key(service, "v2")]
        # Only reporter="destination" counts: 20 req/s split 90/10, not doubled by the source side.
        assert near(stable.request_rate, 18.0, 1.0) and near(canary.request_rate, 2.0, 0.2)
        assert stable.success_rate == pytest.approx(100.0)
        # The client side sees 1.5x the latency; the destination's p99 is the configured one.
        assert near(stable.latency_p99_ms, 40, 1)

    failing = evaluate(metrics[key("payment-service", "v2")], SLO)
    assert failing.verdict is Verdict.FAIL
    assert "success rate 90.0% < 99.9%" in failing.lines
    assert "p99 250 ms > 100 ms" in failing.lines
    assert evaluate(metrics[key("auth-service", "v2")], SLO).verdict is Verdict.PASS
    assert evaluate(metrics[key("payment-service", "v1")], SLO).verdict is Verdict.PASS


def test_no_5xx_series_is_zero_errors(source: MetricsSource) -> None:
    no_errors = source.query(
        'istio_requests_total{destination_service_name="order-service", response_code=~"5.*"}'
    )
    assert no_errors == []  # the numerator really is empty ...
    metrics = eventually(
        lambda: source.fetch([("order-service", NAMESPACE)], WINDOW),
        lambda m: key("order-service", "v2") in m,
    )
    canary = metrics[key("order-service", "v2")]
    assert canary.success_rate == pytest.approx(100.0)  # ... and still means 100% success
    assert evaluate(canary, SLO).verdict is Verdict.PASS


def test_no_traffic_is_no_data(
    traffic: TrafficGenerator, traffic_weights: StaticWeights, source: MetricsSource
) -> None:
    traffic_weights.set("user-service", NAMESPACE, 100, 0)
    traffic.refresh()
    watched = [("user-service", NAMESPACE), ("ghost-service", NAMESPACE)]
    metrics = eventually(
        lambda: source.fetch(watched, WINDOW),
        lambda m: key("user-service", "v2") in m and m[key("user-service", "v2")].request_rate == 0,
    )
    idle = metrics[key("user-service", "v2")]
    assert idle.success_rate is None  # 0 / 0: an empty denominator is no traffic ...
    result = evaluate(idle, SLO)
    assert result.verdict is Verdict.NO_DATA  # ... which is never healthy
    assert result.lines == ["request rate 0.0 req/s < 1 req/s minimum"]
    assert not any(k[0] == "ghost-service" for k in metrics)
    assert evaluate(metrics.get(key("ghost-service", "v2")), SLO).verdict is Verdict.NO_DATA


def test_query_count_is_the_same_for_1_and_50_services(source: MetricsSource) -> None:
    fifty = [(s, NAMESPACE) for s in RUNBOOK_SERVICES + BULK_SERVICES]
    assert len(fifty) == 50
    eventually(lambda: source.fetch(fifty, WINDOW), lambda m: len(m) == 2 * len(fifty))
    report = []
    for watched in ([fifty[0]], fifty):
        before, started = source.queries_made, time.perf_counter()
        metrics = source.fetch(watched, WINDOW)
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert source.queries_made - before == QUERIES_PER_FETCH
        assert {k[:2] for k in metrics} == set(watched)
        assert len(metrics) == 2 * len(watched)  # stable and canary of each
        report.append(f"{len(watched)} services: {QUERIES_PER_FETCH} queries, {elapsed_ms:.0f} ms")
    print("fetch: " + "; ".join(report))


def test_unreachable_prometheus_is_metrics_unavailable(
    traffic: TrafficGenerator,
    prometheus_factory: Callable[[Sequence[str]], PrometheusServer],
) -> None:
    server = prometheus_factory([traffic.target])
    with MetricsSource(server.url, timeout=2, scrape_interval=1.0) as source:
        source.fetch([("payment-service", NAMESPACE)], WINDOW)  # answers (maybe nothing yet)
        server.stop()
        with pytest.raises(MetricsUnavailable, match="refused the connection") as caught:
            source.fetch([("payment-service", NAMESPACE)], WINDOW)
        assert caught.value.__cause__ is not None
        # The words a thread shows say the cause; the library's own text stays in the log.
        assert "HTTPConnectionPool" not in caught.value.message
        assert "Max retries" not in caught.value.message
        server.restart()  # same port, same storage: it answers again
        source.fetch([("payment-service", NAMESPACE)], WINDOW)


def test_silent_or_erroring_prometheus_is_metrics_unavailable(source: MetricsSource) -> None:
    with pytest.raises(MetricsUnavailable, match="answered an error"):
        source.query("sum(")  # 400 bad_data
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            MetricsSource(url, timeout=0.3) as hung,
            pytest.raises(MetricsUnavailable, match=r"within 0\.3s"),
        ):
            hung.fetch([("payment-service", NAMESPACE)], WINDOW)


def test_the_callers_query_sees_a_young_caller_that_went_quiet(
    prometheus_factory: Callable[[Sequence[str]], PrometheusServer],
) -> None:
    """A batch job that called a few times and stopped: its series appears once, already
    holding all its requests, and stays flat — increase() alone never sees it. The generator
    runs on a clock the test moves, so that series is flat from its first scrape."""
    now = [0.0]
    weights = StaticWeights({("payment-service", NAMESPACE): (100, 0)})
    with TrafficGenerator(weights, clock=lambda: now[0]) as generator:
        server = prometheus_factory([generator.target])
        server.wait_for_targets()
        generator.set_callers("payment-service", [WEB, "jobs"])
        now[0] += 1  # 10 requests from each
        generator.set_callers("payment-service", [WEB])  # the job is done
        with MetricsSource(server.url, timeout=5) as source:

            def seen() -> list[Caller]:
                now[0] += 0.25  # the web frontend keeps calling
                return observed_callers(source.query(traffic_query(NAMESPACE)),
                                        ["payment-service"])

            found = eventually(seen, lambda c: len(c) == 2)
    assert found == [Caller("payment-service", WEB), Caller("payment-service", "jobs")]


# --- the generator on its own ---------------------------------------------------------------


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


WEB = "cluster.local/ns/frontend/sa/web"


def test_control_api(traffic: TrafficGenerator) -> None:
    status, state = _http(traffic.url + "/control", {
        "service": "health-checker", "version": "v2", "error_rate": 0.5, "rps": 40,
    })  # fmt: skip
    assert status == 200
    assert state["rps"] == 40
    assert state["versions"]["v2"] == {"error_rate": 0.5, "latency_ms": 40.0}
    assert state["subsets"]["canary"] == {"weight": 10, "version": "v2"}
    status, everything = _http(traffic.url + "/control")
    assert status == 200 and state in everything["services"]

    status, answer = _http(traffic.url + "/control", {"service": "nope", "rps": 1})
    assert status == 400 and "no service 'nope'" in answer["error"]
    status, answer = _http(traffic.url + "/control", {"service": "health-checker", "error_rate": 2})
    assert status == 400 and "subset" in answer["error"]

    with urllib.request.urlopen(traffic.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for reporter in ("destination", "source"):
        assert f'reporter="{reporter}"' in text
    assert (
        'istio_request_duration_milliseconds_bucket{destination_service_name="health-checker"'
        in text
    )


def test_control_api_sets_who_calls_a_service() -> None:
    """On a generator of its own: the shared Prometheus would remember these callers for an
    hour, and the authz tests read that as traffic a deny-all would cut."""
    weights = StaticWeights({("health-checker", NAMESPACE): (90, 10),
                             ("user-service", NAMESPACE): (100, 0)})
    with TrafficGenerator(weights) as generator:
        status, state = _http(generator.url + "/control", {
            "service": "health-checker", "callers": [WEB, "jobs"],
        })  # fmt: skip
        assert status == 200 and state["callers"] == [WEB, "jobs"]
        status, answer = _http(generator.url + "/control", {"service": "health-checker",
                                                            "callers": ["Not A Caller"]})
        assert status == 400 and "principal" in answer["error"]
        status, answer = _http(generator.url + "/control", {"service": "health-checker",
                                                            "callers": WEB})
        assert status == 400 and "list" in answer["error"]
        with urllib.request.urlopen(generator.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    assert f'source_principal="spiffe://{WEB}",source_workload_namespace="frontend"' in text
    assert 'source_principal="unknown",source_workload_namespace="jobs"' in text
    # user-service has no callers set: a source Istio could not name
    unset = [line for line in text.splitlines()
             if line.startswith("istio_requests_total{") and '"user-service"' in line]
    assert unset and all('source_principal="unknown",source_workload_namespace="unknown"' in line
                         for line in unset)


def test_generator_follows_live_virtual_service_weights(cluster: RealCluster,
                                                      tmp_path: Path) -> None:
    """The generator reads the weights from the real kube-apiserver (as its admin: the
    traffic is the mesh's, not meshbot's) and follows a change of them."""
    now = [0.0]
    # An ingress-gateway VirtualService for the same host does not steer in-mesh traffic.
    gateway_vs = virtual_service("payment-service")
    gateway_vs["metadata"]["name"] = "payment-service-ingress"
    gateway_vs["spec"]["gateways"] = ["istio-system/public-gateway"]
    gateway_vs["spec"]["http"][0]["route"][0]["weight"] = 0
    gateway_vs["spec"]["http"][0]["route"][1]["weight"] = 100
    cluster.put_object("networking.istio.io", "v1beta1", "virtualservices", gateway_vs)
    from kubernetes import client, config

    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", identity="admin")
    with config.new_client_from_config(config_file=str(kubeconfig)) as api_client:  # type: ignore[no-untyped-call]
        weights = VirtualServiceWeights(client.CustomObjectsApi(api_client), [NAMESPACE])
        generator = TrafficGenerator(weights, poll_interval=0.1, clock=lambda: now[0])
        with generator:
            split = generator.model.splits()[("payment-service", NAMESPACE)]
            assert split.weights == {"stable": 100, "canary": 0}
            assert split.versions == {"stable": "v1", "canary": "v2"}

            def shift(vs: dict[str, Any]) -> None:
                route = vs["spec"]["http"][0]["route"]
                route[0]["weight"], route[1]["weight"] = 75, 25

            cluster.change(
                "networking.istio.io", "v1beta1", "virtualservices", NAMESPACE,
                "payment-service", shift,
            )  # fmt: skip
            eventually(
                lambda: generator.model.splits()[("payment-service", NAMESPACE)].weights,
                lambda w: w == {"stable": 75, "canary": 25},
                timeout=5,
            )
            # Counting is elapsed time x rps x weight: 10 s at 20 req/s → 150 + 50 exactly.
            svc = ("payment-service", NAMESPACE)
            before = [
                generator.model.request_count("destination", svc, v, "200")
                for v in ("v1", "v2")
            ]
            now[0] += 10
            after = [
                generator.model.request_count("destination", svc, v, "200")
                for v in ("v1", "v2")
            ]
            assert [a - b for a, b in zip(after, before, strict=True)] == pytest.approx(
                [150, 50]
            )
