"""`/mesh readiness` against the real kube-apiserver and a real Redis: a production-ready control
plane passes every row, and each shortfall fails its own row with what was found."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from jobs.runtime.handlers import readiness as readiness_handler
from playground.sample_mesh import deployment, ready_pod
from tests.fixtures.meshbot import Mesh
from tests.fixtures.real_cluster import Cluster
from tests.integration.chatops import ChatOps, write_policy

ISTIO = "istio-system"
SEC = ("security.istio.io", "v1beta1")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def ops(mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


@pytest.fixture
def aof_on(redis_client: redis.Redis) -> Iterator[None]:
    """The suite's Redis runs without AOF; production's must not (turned back off after)."""
    redis_client.config_set("appendonly", "yes")
    yield
    redis_client.config_set("appendonly", "no")


def node(name: str, zone: str | None) -> dict[str, object]:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def seed_ready_control_plane(cluster: Cluster, zones: tuple[str, ...]) -> None:
    """istiod's three sample pods placed on nodes of ``zones``; a two-replica ingress gateway;
    STRICT mTLS in production."""
    for index, zone in enumerate(zones):
        cluster.put_object("", "v1", "nodes", node(f"node-{index}", zone))
        pod = ready_pod(f"istiod-{index}", {"app": "istiod"}, ISTIO)
        pod["spec"]["nodeName"] = f"node-{index}"
        cluster.put_object("", "v1", "pods", pod)
    gateway = deployment("istio-ingressgateway", {"app": "istio-ingressgateway",
                                                  "istio": "ingressgateway"}, ISTIO, replicas=2)
    cluster.put_object("apps", "v1", "deployments", gateway)
    cluster.put_object(*SEC, "peerauthentications", {
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "production"},
        "spec": {"mtls": {"mode": "STRICT"}}})


def readiness(ops: ChatOps) -> tuple[str, dict[str, tuple[str, str]]]:
    ack, _ = ops.command("readiness", user="U0SOMEONE")  # everyone may look
    assert "Accepted" in ack
    ops.run()
    text = ops.roots()[-1]
    table = text.split("```")[1]
    rows = {}
    for line in table.strip().splitlines():
        match = re.fullmatch(r"(PASS|FAIL)  (.+?)  +(.*)", line)
        assert match, line
        rows[match.group(2).strip()] = (match.group(1), match.group(3))
    return text, rows


def test_a_ready_installation_passes_every_row(ops: ChatOps, mesh: Mesh, aof_on: None) -> None:
    seed_ready_control_plane(mesh.cluster, ("zone-a", "zone-b", "zone-c"))
    mesh.redis.set("meshbot:last_tick", str(time.time() - 2))
    text, rows = readiness(ops)
    assert text.startswith(":white_check_mark: *Production readiness*: 9 of 9 checks pass")
    tick = rows.pop("meshbot analysis tick recent")
    assert tick[0] == "PASS" and re.fullmatch(r"last tick [0-9]s ago", tick[1]), tick
    assert rows == {
        "istiod replicas >= 3": ("PASS", "3 ready of 3"),
        "istiod spread across zones": ("PASS", "3 zones (zone-a, zone-b, zone-c) for 3 pods"),
        "istiod PodDisruptionBudget": ("PASS", "`istiod`: minAvailable 2"),
        "istiod HorizontalPodAutoscaler": ("PASS", "`istiod`: 3 to 10"),
        "ingress gateway replicas >= 2": ("PASS", "`istio-ingressgateway`: 2 ready"),
        "mTLS STRICT in production": ("PASS",
                                      "namespace-wide PeerAuthentication `default`: STRICT"),
        "meshbot Redis reachable": ("PASS", "ping answered"),
        "meshbot Redis persistence (AOF)": ("PASS", "on"),
    }


def test_each_shortfall_fails_its_row(ops: ChatOps, mesh: Mesh,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seed_ready_control_plane(mesh.cluster, ("zone-a", "zone-a", "zone-b"))
    cluster = mesh.cluster
    cluster.change("apps", "v1", "deployments", ISTIO, "istio-ingressgateway",
                   lambda d: d["status"].update(readyReplicas=1, availableReplicas=1))
    cluster.change(*SEC, "peerauthentications", "production", "default",
                   lambda pa: pa["spec"].update(mtls={"mode": "PERMISSIVE"}))
    cluster.change("autoscaling", "v2", "horizontalpodautoscalers", ISTIO, "istiod",
                   lambda h: h["spec"]["scaleTargetRef"].update(name="something-else"))
    # The handler's clock held still, so the tick is exactly 10 minutes old however long the
    # command takes to reach it on a busy machine.
    now = time.time()
    monkeypatch.setattr(readiness_handler, "time", SimpleNamespace(time=lambda: now))
    mesh.redis.set("meshbot:last_tick", str(now - 600))
    text, rows = readiness(ops)
    assert text.startswith(":warning: *Production readiness*: 3 of 9 checks pass")
    assert rows["istiod replicas >= 3"][0] == "PASS"
    assert rows["istiod spread across zones"] == (
        "FAIL", "2 zones (zone-a, zone-b) for 3 pods")
    assert rows["istiod HorizontalPodAutoscaler"] == ("FAIL", "none scales istiod in istio-system")
    assert rows["ingress gateway replicas >= 2"] == ("FAIL", "`istio-ingressgateway`: 1 ready")
    assert rows["mTLS STRICT in production"] == (
        "FAIL", "namespace-wide PeerAuthentication `default`: PERMISSIVE")
    assert rows["meshbot Redis persistence (AOF)"][0] == "FAIL"
    assert "would not survive a restart" in rows["meshbot Redis persistence (AOF)"][1]
    assert rows["meshbot analysis tick recent"] == ("FAIL", "last tick 10m ago")


def test_a_bare_cluster_fails_without_hiding_rows(ops: ChatOps, mesh: Mesh) -> None:
    """The sample mesh's istiod pods are on no node, and there is no gateway nor any
    PeerAuthentication: those rows fail and say why, the others still show."""
    _, rows = readiness(ops)
    assert rows["istiod spread across zones"][0] == "FAIL"
    assert rows["ingress gateway replicas >= 2"] == (
        "FAIL", "no ingress gateway Deployment in istio-system")
    assert rows["mTLS STRICT in production"] == (
        "FAIL", "no namespace-wide PeerAuthentication (the mesh default applies)")
    assert rows["meshbot analysis tick recent"] == ("FAIL", "no tick recorded yet")
    assert rows["istiod PodDisruptionBudget"][0] == "PASS"
