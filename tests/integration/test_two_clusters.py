"""One meshbot drives two clusters (two real kube-apiservers, one kubeconfig context each): a
command on a service that runs in both must name its cluster, and changes only that one;
rollouts, audit and status are the cluster's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobs.adapters.alert_threads import ROLLBACK_EMOJI
from jobs.adapters.audit import AuditLog
from jobs.adapters.keys import Keys
from jobs.runtime import context
from jobs.runtime.handlers.alerts import handle_alert
from meshbot.alerts import Notification
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh
from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.two_clusters import EU, US, TwoClusters
from tests.integration.chatops import APPROVERS, ChatOps, write_policy
from tests.integration.test_emergency import NS as SHOP
from tests.integration.test_emergency import (
    complete_rollout,
    release_scheduled,
    restarted,
    seed_shop,
)


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = write_policy(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["clusters"] = {EU: {"context": EU}, US: {"context": US}}
    data["services"]["user-service"]["clusters"] = [US]  # payment-service: both (the default)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def ops(two_clusters: TwoClusters, mesh: Mesh) -> Iterator[ChatOps]:
    yield ChatOps.start(mesh)


def weights(cluster: RealCluster, service: str) -> dict[str, int]:
    vs = cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production", service)
    route = next(r for r in vs["spec"]["http"] if not r.get("match"))
    return {d["destination"]["subset"]: int(d.get("weight", 100)) for d in route["route"]}


def resource_version(cluster: RealCluster, service: str) -> str:
    vs = cluster.get("networking.istio.io", "v1beta1", "virtualservices", "production", service)
    return str(vs["metadata"]["resourceVersion"])


def test_a_service_in_both_clusters_needs_cluster_and_nothing_changes_without_it(
        ops: ChatOps, two_clusters: TwoClusters) -> None:
    before = {name: resource_version(two_clusters.by_name(name), "payment-service")
              for name in (EU, US)}
    ack, _ = ops.command("canary payment-service 10")
    assert "payment-service runs in prod-eu and prod-us: add cluster=" in ack
    assert ops.queued() == 0
    ops.run()
    assert {name: resource_version(two_clusters.by_name(name), "payment-service")
            for name in (EU, US)} == before
    assert ops.roots() == []


def test_cluster_names_the_one_cluster_that_changes(ops: ChatOps,
                                                    two_clusters: TwoClusters) -> None:
    ack, _ = ops.command("canary payment-service 10 cluster=prod-us")
    assert "cluster=prod-us" in ack
    ops.run()
    assert weights(two_clusters.us, "payment-service") == {"stable": 90, "canary": 10}
    assert weights(two_clusters.eu, "payment-service") == {"stable": 100, "canary": 0}
    root = next(text for text in ops.roots() if "payment-service" in text)
    assert root.startswith("`prod-us` ")  # every message of the cluster says which

    # Each cluster has its own rollout state, audit and status.
    ops.command("status payment-service cluster=prod-us")
    ops.command("status payment-service cluster=prod-eu")
    ops.command("audit payment-service cluster=prod-us")
    ops.command("audit payment-service cluster=prod-eu")
    ops.run()
    us_status, eu_status, us_audit, eu_audit = ops.roots()[-4:]
    assert us_status.startswith("`prod-us`") and "stable 90 / canary 10" in us_status
    assert eu_status.startswith("`prod-eu`") and "stable 100 / canary 0" in eu_status
    assert "Rollout: none" in eu_status
    assert "canary — done; stable 100 / canary 0 → stable 90 / canary 10" in us_audit
    assert eu_audit.startswith("`prod-eu`") and "no entries yet" in eu_audit

    # A second canary in the other cluster is not blocked by the first one's lock or rollout.
    ops.command("canary payment-service 5 cluster=prod-eu")
    ops.run()
    assert weights(two_clusters.eu, "payment-service") == {"stable": 95, "canary": 5}
    assert weights(two_clusters.us, "payment-service") == {"stable": 90, "canary": 10}


def test_a_service_in_one_cluster_goes_there_without_naming_it(
        ops: ChatOps, two_clusters: TwoClusters) -> None:
    ops.command("canary user-service 10")
    ops.run()
    assert weights(two_clusters.us, "user-service") == {"stable": 90, "canary": 10}
    assert weights(two_clusters.eu, "user-service") == {"stable": 100, "canary": 0}
    ack, _ = ops.command("canary user-service 20 cluster=prod-eu")
    assert "user-service does not run in cluster prod-eu; it runs in prod-us" in ack


def test_an_unknown_cluster_is_refused_by_the_grammar_or_the_policy(ops: ChatOps) -> None:
    ack, _ = ops.command("canary payment-service 10 cluster=prod-ap")
    assert "does not run in cluster prod-ap" in ack
    ack, _ = ops.command("canary payment-service 10 cluster=Prod")
    assert "is not a cluster name" in ack
    assert ops.queued() == 0


def test_a_rollback_wins_only_in_its_own_cluster(ops: ChatOps,
                                                 two_clusters: TwoClusters) -> None:
    ops.command("canary payment-service 10 cluster=prod-us")
    ops.command("canary payment-service 10 cluster=prod-eu")
    ops.command("rollback payment-service cluster=prod-eu")  # acked after both canaries
    ops.run()
    assert weights(two_clusters.us, "payment-service") == {"stable": 90, "canary": 10}
    assert weights(two_clusters.eu, "payment-service") == {"stable": 100, "canary": 0}


def test_an_alert_from_one_cluster_rolls_back_there(ops: ChatOps,
                                                    two_clusters: TwoClusters) -> None:
    ops.command("canary payment-service 10 cluster=prod-us")
    ops.command("canary payment-service 10 cluster=prod-eu")
    ops.run()
    notification = Notification.model_validate({
        "version": "4", "groupKey": '{}:{alertname="CanaryErrorRate"}', "status": "firing",
        "commonLabels": {"cluster": "prod-us"},
        "alerts": [{"status": "firing", "labels": {"alertname": "CanaryErrorRate",
                                                   "destination_service_name": "payment-service"},
                    "annotations": {"summary": "5xx"}, "startsAt": "2026-12-01T10:00:00Z"}],
    })
    handle_alert(context.current(), notification)
    alert = next(m for m in ops.mesh.slack.roots(CHANNEL) if "CanaryErrorRate" in m.text)
    assert alert.text.startswith("`prod-us` ")
    assert "Rollout in progress" in alert.text  # prod-us's rollout, found in its own state
    ops.react(OPERATOR, alert.ts, sorted(ROLLBACK_EMOJI)[0])
    ops.run()
    assert weights(two_clusters.us, "payment-service") == {"stable": 100, "canary": 0}
    assert weights(two_clusters.eu, "payment-service") == {"stable": 90, "canary": 10}


def test_approvals_of_one_cluster_are_its_own(ops: ChatOps, two_clusters: TwoClusters) -> None:
    ack, _ = ops.command("canary payment-service 50 cluster=prod-us")
    assert "pending approval" in ack
    ops.run()
    request = ops.approval()
    assert request.text.startswith("`prod-us` ")
    for approver in APPROVERS[:2]:
        ops.react(approver, request.ts)
    ops.run()
    assert weights(two_clusters.us, "payment-service") == {"stable": 50, "canary": 50}
    assert weights(two_clusters.eu, "payment-service") == {"stable": 100, "canary": 0}
    ops.command("audit payment-service cluster=prod-us")
    ops.command("audit payment-service cluster=prod-eu")
    ops.run()
    us_audit, eu_audit = ops.roots()[-2:]
    assert "approved" in us_audit and "<@U0APPROVER2>" in us_audit
    assert "no entries yet" in eu_audit
    # Each approver's reaction is audited in prod-us too: nothing lands outside its cluster.
    entries = AuditLog(ops.mesh.redis, Keys(cluster=US)).last("payment-service", 20)
    assert {e.actor for e in entries} >= set(APPROVERS[:2])
    assert AuditLog(ops.mesh.redis, Keys(cluster=None)).last("payment-service", 20) == []


def test_an_emergency_runs_to_the_end_in_its_cluster_only(ops: ChatOps, mesh: Mesh,
                                                          two_clusters: TwoClusters) -> None:
    for cluster in (two_clusters.eu, two_clusters.us):
        seed_shop(cluster)
    ack, _ = ops.command(f"emergency {SHOP} cluster=prod-us")
    assert "Accepted" in ack, ack
    ops.run()
    ts = ops.approval().ts
    for approver in APPROVERS[:2]:
        ops.react(approver, ts)
    ops.run()
    # Later looks at the restarts are jobs of their own: they too must reach prod-us.
    for name in ("cart-v1", "checkout-v1"):
        assert restarted(two_clusters.us, name)
        complete_rollout(two_clusters.us, name)
        release_scheduled(mesh)
        ops.run()
    assert release_scheduled(mesh) == 0  # finished
    assert any("Emergency in `shop` complete" in text
               for root in ops.mesh.slack.roots(CHANNEL) if "*Emergency*" in root.text
               for text in ops.thread(root.ts))
    untouched = two_clusters.eu.get("security.istio.io", "v1beta1", "peerauthentications",
                                    SHOP, "default")
    assert untouched["spec"]["mtls"]["mode"] == "STRICT"
    assert not restarted(two_clusters.eu, "cart-v1")
