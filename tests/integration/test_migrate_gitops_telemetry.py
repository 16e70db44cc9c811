"""``/mesh migrate <ns> phase=5`` would write the namespace's Telemetry: one that a GitOps
controller owns is refused before anything is posted or written, as the PeerAuthentication is."""

from __future__ import annotations

from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import ChatOps
from tests.integration.test_migrate import (  # noqa: F401 (fixtures)
    NS,
    ops,
    policy_path,
    snapshot,
    workflow,
)


def test_a_gitops_owned_telemetry_is_refused(ops: ChatOps, mesh: Mesh) -> None:  # noqa: F811
    mesh.cluster.put_object("telemetry.istio.io", "v1", "telemetries", {
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": f"{NS}-telemetry", "namespace": NS,
                     "labels": {"argocd.argoproj.io/instance": "mesh-config"}},
        "spec": {"tracing": [{"providers": [{"name": "zipkin"}]}]}})
    before = snapshot(mesh)

    _, url = ops.command(f"migrate {NS} phase=5")
    ops.run()

    told = " ".join(ops.told(url))
    assert f"Telemetry {NS}/{NS}-telemetry is managed by Argo CD" in told, told
    assert snapshot(mesh) == before and workflow(mesh) is None
