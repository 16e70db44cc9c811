"""What `/mesh migrate` may write, enforced by the real kube-apiserver under the chart's RBAC:
Deployments created and deleted in the managed namespaces only, Telemetry written there (and
not replaced: the workflow patches it), nothing of it in meshbot's own namespace or one the
chart does not manage. meshbot's own adapter is used, as the workflow uses it."""

from __future__ import annotations

import pytest

from jobs.adapters.kube import KubeClient
from jobs.adapters.kube_workloads import KubeWorkloads
from jobs.domain import migration_bodies as bodies
from meshbot.errors import MeshForbidden
from playground.sample_mesh import deployment
from tests.fixtures.real_cluster import RealCluster

NS = "production"
TELEMETRY = ("telemetry.istio.io", "v1", "telemetries")


def test_a_green_copy_is_created_and_removed_in_a_managed_namespace(
        kube: KubeClient, cluster: RealCluster) -> None:
    work = KubeWorkloads(kube)
    blue = kube.get_deployment(NS, "payment-service-v1")
    green = work.create_deployment(NS, bodies.green_copy(blue, "version", "wf"))
    assert green["metadata"]["name"] == "payment-service-v1-green"
    work.delete_deployment(NS, "payment-service-v1-green")
    with pytest.raises(KeyError):
        cluster.get("apps", "v1", "deployments", NS, "payment-service-v1-green")
    body = bodies.telemetry(NS, ["prometheus"], ["jaeger"], ["otel"])
    kube.create_custom(*TELEMETRY[:2], TELEMETRY[2], NS, body)
    stored = work.get_custom(*TELEMETRY[:2], TELEMETRY[2], NS, bodies.telemetry_name(NS))
    kube.patch_custom(*TELEMETRY[:2], TELEMETRY[2], NS, bodies.telemetry_name(NS),
                      {"spec": {"tracing": []}})
    with pytest.raises(MeshForbidden, match="not allowed to update telemetries"):
        kube.replace_custom(*TELEMETRY[:2], TELEMETRY[2], NS, bodies.telemetry_name(NS), stored)


@pytest.mark.parametrize("where", ["meshbot", "unmanaged"])
def test_no_deployment_nor_telemetry_is_written_outside_them(
        kube: KubeClient, cluster: RealCluster, apiserver_namespace: str, where: str) -> None:
    namespace = apiserver_namespace if where == "unmanaged" else where
    work = KubeWorkloads(kube)
    stray = deployment("ledger-v1", {"app": "ledger", "version": "v1"}, namespace)
    cluster.put_object("apps", "v1", "deployments", stray)
    with pytest.raises(MeshForbidden, match=r"not allowed to create deployments\.apps"):
        work.create_deployment(namespace, bodies.green_copy(stray, "version", "wf"))
    with pytest.raises(MeshForbidden, match=r"not allowed to delete deployments\.apps"):
        work.delete_deployment(namespace, "ledger-v1")
    with pytest.raises(MeshForbidden, match="not allowed to create telemetries"):
        kube.create_custom(*TELEMETRY[:2], TELEMETRY[2], namespace,
                           bodies.telemetry(namespace, ["prometheus"], [], []))
    assert cluster.get("apps", "v1", "deployments", namespace, "ledger-v1")
    with pytest.raises(KeyError):
        cluster.get("apps", "v1", "deployments", namespace, "ledger-v1-green")
