"""Each cluster's canaries are judged by that cluster's Prometheus: two real kube-apiservers,
two traffic generators following their own VirtualServices, two real Prometheus servers. A
canary that breaks in prod-us is rolled back there, while the same service's canary in prod-eu,
healthy, goes on."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes.client import CustomObjectsApi

from jobs.domain.rollout import Phase
from jobs.runtime import context
from jobs.runtime.ticker import Ticker
from meshbot.settings import Settings
from playground.mesh_weights import VirtualServiceWeights
from playground.prometheus_server import PrometheusServer
from playground.traffic import TrafficGenerator
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import Mesh
from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.two_clusters import EU, US, TwoClusters
from tests.integration.chatops import ChatOps

SERVICE = "user-service"  # core tier: a canary at 10 % needs no approval


@dataclass
class Observed:
    traffic: TrafficGenerator
    prometheus: PrometheusServer


@pytest.fixture
def observed(two_clusters: TwoClusters, tmp_path: Path) -> Iterator[dict[str, Observed]]:
    """Per cluster: traffic split by its VirtualServices, and a Prometheus scraping it."""
    with ExitStack() as stack:
        found = {}
        for name in (EU, US):
            cluster: RealCluster = two_clusters.by_name(name)
            api = stack.enter_context(cluster.server.api_client("admin"))
            traffic = stack.enter_context(TrafficGenerator(
                VirtualServiceWeights(CustomObjectsApi(api), ["production"]), poll_interval=0.2))
            prometheus = stack.enter_context(PrometheusServer(
                tmp_path / f"prometheus-{name}", [traffic.target], scrape_interval=1.0))
            found[name] = Observed(traffic, prometheus)
        for each in found.values():
            each.prometheus.wait_for_targets()
        yield found


@pytest.fixture
def policy_path(tmp_path: Path, analysis_policy: Path,
                observed: dict[str, Observed]) -> Path:
    data = yaml.safe_load(analysis_policy.read_text())
    data["clusters"] = {name: {"context": name, "prometheus_url": each.prometheus.url}
                        for name, each in observed.items()}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def queries_served(prometheus: PrometheusServer) -> int:
    """Instant queries the server answered, from its own metrics."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{")
               and 'handler="/api/v1/query"' in line)


def test_each_cluster_is_judged_by_its_own_prometheus(
        two_clusters: TwoClusters, mesh: Mesh, observed: dict[str, Observed],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHBOT_SCRAPE_INTERVAL", "1")
    monkeypatch.setenv("MESHBOT_TICK_PERIOD", "0.5")
    ops = ChatOps.start(mesh)
    for name in (EU, US):
        ack, _ = ops.command(f"canary {SERVICE} 10 cluster={name}")
        assert "Accepted" in ack, ack
    ops.run()
    ctx = context.current()
    stores = {name: ctx.for_cluster(name).store for name in (EU, US)}
    assert all(store.get(SERVICE) is not None for store in stores.values())
    before = {name: queries_served(each.prometheus) for name, each in observed.items()}
    observed[US].traffic.set_profile(SERVICE, subset="canary", error_rate=0.3)

    ticker = Ticker(mesh.redis, Settings())
    ticker.start()
    try:
        def us_rolled_back() -> bool:
            rollout = stores[US].get(SERVICE)
            return rollout is not None and rollout.phase is Phase.ROLLED_BACK
        eventually(us_rolled_back, 60, f"{SERVICE} rolled back in {US}")
    finally:
        ticker.stop()

    eu = stores[EU].get(SERVICE)
    assert eu is not None and not eu.phase.terminal, eu
    assert weights(two_clusters.us) == {"stable": 100, "canary": 0}
    assert weights(two_clusters.eu) == {"stable": 90, "canary": 10}
    after = {name: queries_served(each.prometheus) for name, each in observed.items()}
    assert all(after[name] > before[name] for name in (EU, US)), (before, after)
    thread = "\n".join(ops.roots())
    assert f"`{US}`" in thread


def weights(cluster: RealCluster) -> dict[str, int]:
    vs = cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production", SERVICE)
    route = next(r for r in vs["spec"]["http"] if not r.get("match"))
    return {d["destination"]["subset"]: int(d.get("weight", 100)) for d in route["route"]}
